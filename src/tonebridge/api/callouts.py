"""Request validation for the calling API: JSON bodies into the typed requests of calls/requests.py.

Every fault is an ApiError naming the field as the client spelled it (40001 invalid, 40002 missing), so a
route validates completely before it asks the application for anything.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tonebridge.api.errors import invalid, missing
from tonebridge.calls.requests import (
    CallbackUrls,
    CallLeg,
    Callout,
    CalloutMethod,
    ParticipantCommand,
    ParticipantUpdate,
)
from tonebridge.conference.options import (
    DtmfOptions,
    InvalidField,
    validate_conference_id,
    validate_moh_class,
)
from tonebridge.sip.message import SipUri
from tonebridge.svaml.models import Svaml, parse_svaml

__all__ = [
    "DTMF_SEND",
    "MAX_CUSTOM",
    "MAX_DURATION",
    "MAX_TTS",
    "parse_call_leg",
    "parse_call_update",
    "parse_callback_urls",
    "parse_callout",
    "parse_callout_request",
    "parse_destination",
    "parse_number",
    "parse_numbers",
    "parse_participant_update",
    "requested_application",
]

MAX_CUSTOM = 1024
MAX_DURATION = 14_400
MAX_TTS = 600
DTMF_SEND = re.compile(r"^[0-9#*A-Dw]+$")


def _bool(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(name, "must be true or false")
    return value


def _text(params: dict[str, Any], name: str, limit: int = 1024) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if len(value.encode()) > limit:
        raise invalid(name, f"must be at most {limit} bytes")
    return value


def parse_destination(params: dict[str, Any], method: str) -> dict[str, str]:
    destination = params.get("destination")
    if destination is None:
        raise missing(f"{method}.destination")
    if not isinstance(destination, dict):
        raise invalid(f"{method}.destination", "must be an object with type and endpoint")
    kind = destination.get("type")
    endpoint = destination.get("endpoint")
    if kind is None:
        raise missing(f"{method}.destination.type")
    if not isinstance(kind, str) or kind.lower() not in ("number", "username", "sip"):
        raise invalid(f"{method}.destination.type", "must be number, username or sip")
    if endpoint is None:
        raise missing(f"{method}.destination.endpoint")
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > 256:
        raise invalid(f"{method}.destination.endpoint", "must be a non-empty string")
    if kind.lower() == "sip":
        try:
            SipUri.parse(endpoint if endpoint.lower().startswith(("sip:", "sips:")) else f"sip:{endpoint}")
        except ValueError as exc:
            raise invalid(f"{method}.destination.endpoint", f"not a SIP URI ({exc})") from None
    elif not re.fullmatch(r"[A-Za-z0-9+._\-]{1,64}", endpoint):
        raise invalid(
            f"{method}.destination.endpoint", "must be a number or user name (letters, digits, + . _ -)"
        )
    return {"type": kind.lower(), "endpoint": endpoint}


def parse_callout_request(body: dict[str, Any]) -> Callout:
    """A `POST /calling/v1/callouts` body: `{"method": ..., "<method>": {...}}`."""
    method = body.get("method")
    if method is None:
        raise missing("method")
    if method not in tuple(CalloutMethod):
        raise invalid("method", "must be conferenceCallout, ttsCallout or customCallout")
    params = body.get(method)
    if params is None:
        raise missing(method)
    if not isinstance(params, dict):
        raise invalid(method, "must be an object")
    return parse_callout(CalloutMethod(method), params, body)


def parse_callout(method: CalloutMethod, params: dict[str, Any], envelope: dict[str, Any]) -> Callout:
    """One method's parameters; `envelope` is the whole body, where the seed's example puts `cli`."""
    fields: dict[str, Any] = {"destination": parse_destination(params, method)}
    cli = _text(params, "cli", 64)
    if cli is None:
        cli = _text(envelope, "cli", 64)
    if cli and any(ord(c) < 0x20 or c == "\x7f" for c in cli):
        raise invalid("cli", "must not contain control characters")  # it goes into the INVITE's From
    fields["cli"] = cli or ""
    fields["custom"] = _text(params, "custom", MAX_CUSTOM)
    fields["locale"] = _text(params, "locale", 32) or "en-US"
    fields["enable_ace"] = _bool(params, "enableAce")
    fields["enable_dice"] = _bool(params, "enableDice")
    fields["enable_pie"] = _bool(params, "enablePie")
    domain = _text(params, "domain", 16)
    if domain is not None and domain.lower() not in ("pstn", "mxp"):
        raise invalid(f"{method}.domain", "must be pstn or mxp")
    fields["domain"] = (domain or "pstn").lower()
    dtmf = _text(params, "dtmf", 128)
    if dtmf is not None and dtmf and not DTMF_SEND.match(dtmf):
        raise invalid(f"{method}.dtmf", "may hold only 0-9, *, #, A-D and w (a 500 ms pause)")
    fields["dtmf"] = dtmf or None
    max_duration = params.get("maxDuration")
    if max_duration is not None:
        if (
            isinstance(max_duration, bool)
            or not isinstance(max_duration, int)
            or not 0 < max_duration <= MAX_DURATION
        ):
            raise invalid(f"{method}.maxDuration", f"must be an integer from 1 to {MAX_DURATION} seconds")
        fields["max_duration"] = max_duration
    if method is CalloutMethod.CONFERENCE:
        fields.update(_conference_fields(params))
    elif method is CalloutMethod.TTS:
        text = _text(params, "text", MAX_TTS * 4)
        if text is not None and len(text) > MAX_TTS:
            raise invalid("ttsCallout.text", f"must be at most {MAX_TTS} characters")
        prompts = _text(params, "prompts", 4096)
        if not text and not prompts:
            raise missing("ttsCallout.text")
        fields.update(text=text, prompts=prompts)
    else:
        fields["custom_svaml"] = _custom_svaml(params)
    return Callout(method, **fields)


def _conference_fields(params: dict[str, Any]) -> dict[str, Any]:
    conference_id = params.get("conferenceId")
    if conference_id is None:
        raise missing("conferenceCallout.conferenceId")
    try:
        fields: dict[str, Any] = {
            "conference_id": validate_conference_id(conference_id, "conferenceCallout.conferenceId")
        }
        options = params.get("conferenceDtmfOptions")
        if options is not None and not isinstance(options, dict):
            raise InvalidField("conferenceCallout.conferenceDtmfOptions", "must be an object")
        fields["dtmf_options"] = DtmfOptions.from_json(options) if options is not None else None
        moh = params.get("mohClass")
        fields["moh"] = validate_moh_class(moh, "conferenceCallout.mohClass") if moh is not None else None
    except InvalidField as exc:
        # DtmfOptions names its own fields (mode, maxDigits...); the client wrote them inside the options.
        field_name = (
            exc.field
            if exc.field.startswith("conferenceCallout")
            else f"conferenceCallout.conferenceDtmfOptions.{exc.field}"
        )
        raise invalid(field_name, exc.message) from None
    fields["greeting"] = _text(params, "greeting", MAX_TTS * 4)
    return fields


def _custom_svaml(params: dict[str, Any]) -> dict[str, str]:
    documents: dict[str, str] = {}
    for name in ("ice", "ace", "pie"):
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, dict):
            value = json.dumps(value)
        if not isinstance(value, str):
            raise invalid(f"customCallout.{name}", "must be SVAML as a JSON string, or a URL")
        documents[name] = value
    return documents


def parse_call_leg(leg: str) -> CallLeg:
    try:
        return CallLeg(leg)
    except ValueError:
        raise invalid("callLeg", "must be caller, callee or both") from None


def parse_call_update(body: dict[str, Any]) -> Svaml:
    """A PATCH of a call: SVAML, read as any SVAML is. Whether its action suits the call's state is the
    application's to say (the SvamlError it raises maps to the same 400)."""
    return parse_svaml(body)


def parse_participant_update(body: dict[str, Any]) -> ParticipantUpdate:
    command = body.get("command")
    options = body.get("conferenceDtmfOptions")
    if command is None and options is None:
        raise missing("command")
    moh = body.get("moh")
    if moh is not None:
        try:
            validate_moh_class(moh, "moh")
        except InvalidField as exc:
            raise invalid(exc.field, exc.message) from None
    parsed: DtmfOptions | None = None
    if options is not None:
        if not isinstance(options, dict):
            raise invalid("conferenceDtmfOptions", "must be an object")
        try:
            parsed = DtmfOptions.from_json(options)
        except InvalidField as exc:
            raise invalid(f"conferenceDtmfOptions.{exc.field}", exc.message) from None
    if command is not None and command not in tuple(ParticipantCommand):
        raise invalid("command", "must be mute, unmute, onhold or resume")
    return ParticipantUpdate(ParticipantCommand(command) if command is not None else None, parsed, moh)


def parse_numbers(body: dict[str, Any]) -> list[str]:
    numbers = body.get("numbers")
    if not isinstance(numbers, list) or not all(isinstance(n, str) and n for n in numbers):
        raise invalid("numbers", "must be a list of numbers") if numbers is not None else missing("numbers")
    return numbers


def requested_application(body: dict[str, Any], key: str) -> object:
    """The application a numbers body names (either spelling), else the caller's own."""
    return body.get("applicationkey") or body.get("applicationKey") or key


def parse_number(body: dict[str, Any]) -> str:
    number = body.get("number")
    if not isinstance(number, str) or not number:
        raise invalid("number", "must be a number") if number is not None else missing("number")
    return number


def parse_callback_urls(body: dict[str, Any]) -> CallbackUrls:
    url = body.get("url")
    if not isinstance(url, dict):
        raise missing("url") if url is None else invalid("url", "must be an object with primary and fallback")
    for name in ("primary", "fallback"):
        value = url.get(name)
        if value is not None and (
            not isinstance(value, str) or (value and not value.startswith(("http://", "https://")))
        ):
            raise invalid(f"url.{name}", "must be an http:// or https:// URL")
    # A name sent as null clears the URL as "" does; a name not sent leaves it.
    return CallbackUrls(**{name: url[name] or "" for name in ("primary", "fallback") if name in url})
