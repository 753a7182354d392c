"""`tonebridge serve`: wires the SIP stack, the media clock, the call engine and the HTTP API together,
and runs them until SIGTERM or SIGINT, when it ends every call with BYE and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from tonebridge.api.app import create_app
from tonebridge.api.connection_limits import protocol_class
from tonebridge.callbacks.outbox import Outbox
from tonebridge.calls.application import Application
from tonebridge.calls.conferencing import ConferenceService
from tonebridge.calls.demo import DemoApplication
from tonebridge.calls.engine import CallEngine
from tonebridge.calls.history import CallRecorder, HistoryPruner, RoomMembershipBus
from tonebridge.calls.sinch import SinchApplication
from tonebridge.calls.sinch_api import SinchOperations
from tonebridge.config import Config, split_host_port
from tonebridge.events import application_owner
from tonebridge.media.clock import MediaClock
from tonebridge.sip.stack import SipStack
from tonebridge.sip.transaction import TimerConfig
from tonebridge.store.db import Store

if TYPE_CHECKING:
    from tonebridge.cluster.directory import ClusterDirectory
    from tonebridge.cluster.forward import ApiForwarder
    from tonebridge.cluster.outbox import RedisOutboxStorage
    from tonebridge.cluster.reaper import Reaper

log = logging.getLogger("tonebridge.server")


class _QuietUvicorn(uvicorn.Server):
    """Uvicorn without its own signal handlers: the server owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Server:
    def __init__(self, config: Config, application: Application | None = None) -> None:
        self.config = config
        sip_host, sip_port = split_host_port(config.server.sip)
        self.stack = SipStack(
            sip_host,
            sip_port,
            public_address=config.server.public_address,
            timers=TimerConfig(t1=config.sip.timer_t1_ms / 1000),
        )
        low, high = config.server.rtp_ports
        self.clock = MediaClock(capacity=max(1, (high - low + 1) // 2))  # a row per port pair
        self.sinch: SinchApplication | None = None
        self.sinch_api: SinchOperations | None = None  # what the calling routes call, over self.sinch
        self.outbox: Outbox | None = None
        # In cluster mode the outbox's rows live in Redis, and a reaper takes over dead nodes' callbacks.
        self.outbox_storage: RedisOutboxStorage | None = None
        self.reaper: Reaper | None = None
        # Every mode keeps its call history, the demo's too (README: SQLite on embedded defaults).
        data_dir = Path(config.server.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(data_dir / "tonebridge.sqlite3")
        if application is None and config.applications:
            application = self._sinch_application(config, self.store)
        self.application: Application = application or DemoApplication()
        self.engine = CallEngine(config, self.stack, self.clock, self.application)
        self.conferences = ConferenceService(
            self.engine, self.application.collection, events=RoomMembershipBus(self.store)
        )
        self.history = CallRecorder(self.store, self.engine.now)
        self.history_pruner = HistoryPruner(self.store, config.records.retention_days * 86400.0)
        self.conferences.events.owner_of = application_owner(self.sinch) if self.sinch else None
        # The wiring, explicit: the rooms hear of every call event before the application does (a
        # collection that a hang-up ends sends its PIE before the call's DiCE); the tick mixes the rooms.
        # The history comes last: it adds the call's times and outcome to what the application recorded.
        self.engine.observers += [
            self.conferences.on_call_event,
            self.application.on_event,
            self.history.on_call_event,
        ]
        self.clock.tick_hooks.append(self.conferences.tick)
        self.application.attach(self.engine, self.conferences)
        self.directory = self._cluster_directory(config) if config.cluster is not None else None
        if self.directory is not None and self.outbox_storage is not None:
            self.reaper = self._cluster_reaper(self.directory, self.outbox_storage)
        # calling/v1 requests for what another node carries are answered there (cluster/forward.py).
        self.forwarder = self._api_forwarder(self.directory) if self.directory is not None else None
        self._http: _QuietUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.http_port = 0
        self._stopped = asyncio.Event()

    def _cluster_directory(self, config: Config) -> ClusterDirectory:
        """This node's entry in the cluster's Redis (docs/cluster.md): fed by the rooms' start and end and
        by calls' answer and end; while it cannot reach Redis the SIP stack refuses new calls."""
        from tonebridge.cluster.directory import ClusterDirectory, NodeLoad

        assert config.cluster is not None
        rooms = self.conferences.rooms
        directory = ClusterDirectory(
            config.cluster,
            sip=config.server.sip,
            http=config.server.http,
            load=lambda: NodeLoad(self.engine.active_calls, len(rooms), len(self.conferences.members)),
            local_conferences=lambda: set(rooms.conference_ids()),
        )
        self.conferences.events.taps.append(directory.on_room_event)
        # First, so that a call is entered before the application adds what its DiCE would need.
        self.engine.observers.insert(0, directory.on_call_event)
        if self.sinch is not None:
            from tonebridge.cluster.moves import MOVE_PARAM, CallMover, moved_call_id

            self.sinch.directory = directory
            self.sinch.mover = CallMover(directory)
            self.engine.moved_call_id = lambda request: moved_call_id(
                request.request_uri.params.get(MOVE_PARAM)
            )
        self.stack.unavailable = directory.unavailable
        return directory

    def _cluster_outbox(self, config: Config) -> RedisOutboxStorage | None:
        """In cluster mode, the outbox's rows in Redis, where a survivor can take them over."""
        if config.cluster is None:
            return None
        from tonebridge.cluster.outbox import RedisOutboxStorage

        self.outbox_storage = RedisOutboxStorage.from_url(config.cluster.redis, config.cluster.node_id)
        return self.outbox_storage

    def _cluster_reaper(self, directory: ClusterDirectory, storage: RedisOutboxStorage) -> Reaper:
        """Every heartbeat: take over the callbacks, calls and homes of dead nodes (docs/cluster.md)."""
        from tonebridge.cluster.reaper import Reaper

        assert self.outbox is not None
        storage.on_late_rows = self.outbox.adopt
        return Reaper(directory, storage, self.outbox)

    def _api_forwarder(self, directory: ClusterDirectory) -> ApiForwarder:
        from tonebridge.cluster.forward import ApiForwarder

        return ApiForwarder(directory)

    def _sinch_application(self, config: Config, store: Store) -> SinchApplication:
        """The configured applications, served Sinch-style: an outbox and the API behind them."""
        data_dir = Path(config.server.data_dir)
        self.outbox = Outbox(
            store,
            lambda key: self.sinch_api.secret_for(key) if self.sinch_api else None,
            retention=config.callbacks.retention_seconds,
            storage=self._cluster_outbox(config),
        )
        self.sinch = SinchApplication(
            config, store, self.outbox, base_url=f"http://{config.server.http}", tts_dir=data_dir / "tts"
        )
        self.sinch_api = SinchOperations(self.sinch)
        return self.sinch

    async def start(self) -> None:
        Path(self.config.server.data_dir).mkdir(parents=True, exist_ok=True)
        if self.outbox_storage is not None:
            await self.outbox_storage.open()
        if self.outbox is not None:
            self.outbox.start()
        self.history_pruner.start()
        if self.directory is not None:
            await self.directory.start()
        if self.reaper is not None:
            self.reaper.start()
        await self.stack.start()
        self.clock.start()
        http_host, http_port = split_host_port(self.config.server.http)
        uv_config = uvicorn.Config(
            create_app(self),
            host=http_host,
            port=http_port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
            # The HTTP port's limits (docs/operations.md, "HTTP limits"); h11 always, since the header
            # deadline is an h11 protocol subclass and the header size limit is h11's.
            http=protocol_class(self.config.http.header_timeout_seconds),
            h11_max_incomplete_event_size=self.config.http.max_header_bytes,
            timeout_keep_alive=self.config.http.keep_alive_seconds,
            limit_concurrency=self.config.http.max_connections,
        )
        self._http = _QuietUvicorn(uv_config)
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve())
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises the bind error
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        self.http_port = self._http.servers[0].sockets[0].getsockname()[1]
        mode = "demo" if self.config.demo_mode else f"applications={len(self.config.applications)}"
        log.info(
            "event=listening sip_udp=%s:%d sip_tcp=%s:%d http=http://%s:%d rtp_ports=%d-%d mode=%s",
            self.stack.transport.host,
            self.stack.port,
            self.stack.transport.host,
            self.stack.port,
            http_host,
            self.http_port,
            *self.config.server.rtp_ports,
            mode,
        )

    async def stop(self) -> None:
        log.info("event=stopping active_calls=%d", self.engine.active_calls)
        await self.engine.shutdown()
        if self._http:
            self._http.should_exit = True
            if self._http_task:
                await self._http_task
        await self.clock.stop()
        await self.stack.close()
        if self.reaper is not None:
            await self.reaper.close()
        if self.outbox is not None:
            # Undelivered callbacks stay in the store and go out after the next start.
            await self.outbox.close()
        if self.outbox_storage is not None:
            await self.outbox_storage.close()
        await self.history_pruner.close()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.directory is not None:
            await self.directory.close()
            if self.outbox_storage is not None:
                # Callbacks still pending: left to a survivor, as a dead node's are (docs/cluster.md).
                await self.outbox_storage.hand_over()
        # Commits what is still queued (the last attempts' outcomes, call records) off the loop.
        await self.store.aclose()
        log.info("event=stopped")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)
        await self.start()
        await self._stopped.wait()
        await self.stop()
