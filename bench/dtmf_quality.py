"""Judge the in-band DTMF detector against spandsp on the shared DTMF bench and write the side-by-side table.

The bench lives outside this repository, at `../shared/tools/dtmf-bench/` relative to the repository root
(override with --bench). It needs libspandsp2 and the talk-off corpus (Debian asterisk-core-sounds-en-wav
and asterisk-moh-opsound-wav, never committed here): `bash ../shared/tools/dtmf-bench/install-deps.sh`.

One run does, for `tonebridge.media.dtmf:DtmfDetector` and for spandsp, each on 20 ms frames through G.711
u-law: the bench's `suite` (Q.24 rows and boundaries), `mitel` (the Mitel CM7291 programme) and `talkoff`
(the corpus at 0 dB and at +6 dB gain), then times both detectors alone to give legs per core. With
--holdout it also repeats our suite with other seeds and A-law, and our talk-off on any other-language
Asterisk prompts installed (asterisk-core-sounds-{fr,es,it,ru}-wav), to show the verdicts do not hang on
the bench's fixed seeds or its one speaker.

    .venv/bin/python bench/dtmf_quality.py --holdout        # about 5 minutes on one core

It prints the tables and writes them into docs/dtmf.md between the `dtmf-quality` markers (--no-write to
only print). OpenBLAS and friends are held to one thread so that the speed figures are per core.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BENCH = REPO.parent / "shared" / "tools" / "dtmf-bench"
DOC = REPO / "docs" / "dtmf.md"
OURS = "tonebridge.media.dtmf:DtmfDetector"
SPEECH = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
MUSIC = Path("/usr/share/asterisk/moh")
HOLDOUT_SPEECH = ("fr_CA_f_June", "es_MX_f_Allison", "it_IT_m_Carlo", "ru_RU_f_IvrvoiceRU")
BEGIN, END = "<!-- dtmf-quality:begin -->", "<!-- dtmf-quality:end -->"


class Bench:
    """Runs dtmf_score.py sub-commands and keeps their JSON results."""

    def __init__(self, path: Path, workdir: Path, reps: int, quick: bool) -> None:
        self.score = path / "dtmf_score.py"
        if not self.score.exists():
            raise SystemExit(f"no DTMF bench at {path}; pass --bench DIR")
        self.workdir, self.reps, self.quick = workdir, reps, quick
        self.log: list[str] = []

    def run(
        self, mode: str, detector: Sequence[str], tag: str, extra: Sequence[str] = ()
    ) -> tuple[dict, str, float]:
        out = self.workdir / f"{tag}.json"
        args = [mode, *detector, *extra]
        if mode == "suite":
            args += ["--reps", str(self.reps)] + (["--quick"] if self.quick else [])
        cmd = [sys.executable, str(self.score), *args, "--json", str(out)]
        shown = " ".join(["python", os.path.relpath(self.score, REPO), *args])
        print(f"  $ {shown}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"bench failed ({shown}):\n{proc.stderr[-3000:]}")
        self.log.append(shown)
        return json.loads(out.read_text()), proc.stdout, wall


OURS_ARGS = ("--py", OURS, "--frame", "160")
SPANDSP_ARGS = ("--detector", "spandsp")
DETECTORS = (("spandsp", SPANDSP_ARGS), ("Tonebridge", OURS_ARGS))


# -- the tables -------------------------------------------------------------------------------------------


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def verdict_mark(v: str) -> str:
    return {"PASS": "pass", "FAIL": "**FAIL**"}.get(v, v)


def q24_table(sp: dict, tb: dict) -> tuple[str, list[str]]:
    rows, worse = [], []
    for (req, sp_meas, sp_v), (req2, tb_meas, tb_v) in zip(sp["q24"], tb["q24"], strict=True):
        assert req == req2
        ok = tb_v == "PASS" or sp_v != "PASS"
        if not ok:
            worse.append(req)
        rows.append([req, sp_meas, verdict_mark(sp_v), tb_meas, verdict_mark(tb_v)])
    return md_table(["Q.24 row (bench `suite`)", "spandsp", "", "Tonebridge", ""], rows), worse


def figures_table(sp: dict, tb: dict) -> str:
    def row(name: str, get: Callable[[dict], object], better: str) -> list[str]:
        return [name, _fmt(get(sp["boundaries"])), _fmt(get(tb["boundaries"])), better]

    def freq(b: dict) -> str:
        return " / ".join(
            f"{b[k]['accept_pct']}-{b[k]['reject_pct']}"
            for k in ("freq_low+", "freq_low-", "freq_high+", "freq_high-")
        )

    def talkdown(kind: str) -> Callable[[dict], str]:
        return lambda b: " ".join(
            f"{float(k):g}:{v['acc']:.2f}" for k, v in b.get(f"talkdown_{kind}", {}).items()
        )

    def spurious(d: dict) -> int:
        groups = (
            "decode",
            "snr",
            "dialtone",
            "long_press",
            "corner",
            "talkdown_speech",
            "talkdown_music",
            "freq_corner_1.5",
        )
        return sum(r["ins"] + r["subs"] for r in d["rows"] if r["group"] in groups)

    rows = [
        row(
            "frequency accepted to - silent from, % (L+ / L- / H+ / H-)",
            freq,
            "Q.24: accept >= 1.5, silent <= 3.5",
        ),
        row("normal twist accepted to, dB", lambda b: b["twist_normal"]["accept_db"], "higher; Q.24: 8"),
        row("reverse twist accepted to, dB", lambda b: b["twist_reverse"]["accept_db"], "higher; Q.24: 4"),
        row(
            "level accepted, dBm0",
            lambda b: f"{b['level']['max_accept_dbm0']} .. {b['level']['min_accept_dbm0']}",
            "wider; Q.24: 0 .. -25",
        ),
        row(
            "level silent at and below, dBm0",
            lambda b: b["level"]["reject_below_dbm0"],
            "Q.24: -55 or higher",
        ),
        row("duration: all detected from, ms", lambda b: b["duration"]["min_accept_ms"], "Q.24: 40 or less"),
        row("duration: silent up to, ms", lambda b: b["duration"]["max_reject_ms"], "Q.24: 23 or more"),
        row(
            "pause separating a repeated digit, ms",
            lambda b: b["pause_same"]["min_accept_ms"],
            "Q.24: 40 or less",
        ),
        row("pause separating different digits, ms", lambda b: b["pause_diff"]["min_accept_ms"], "lower"),
        row("interruption bridged up to, ms", lambda b: b["dropout"]["max_bridged_ms"], "Q.24: 10 or more"),
        row("S/N: all detected down to, dB", lambda b: b["snr"]["min_accept_db"], "lower; Q.24: 15"),
        row(
            "signal to dial tone ratio tolerated, dB",
            lambda b: b["dialtone"]["signal_to_dialtone_db"],
            "lower",
        ),
        row("talk-down, speech (level dBm0: accuracy)", talkdown("speech"), "higher"),
        row("talk-down, music (level dBm0: accuracy)", talkdown("music"), "higher"),
    ]
    rows.append(
        [
            "spurious digits in decode/snr/dial tone/long press/corners/talk-down",
            str(spurious(sp)),
            str(spurious(tb)),
            "0",
        ]
    )
    rows.append(
        [
            "extra digits from split tones, dropout sweep 0-40 ms",
            str(sum(r["ins"] for r in sp["rows"] if r["group"] == "dropout")),
            str(sum(r["ins"] for r in tb["rows"] if r["group"] == "dropout")),
            "lower (gaps over ~20 ms are pauses)",
        ]
    )
    return md_table(["figure (bench `suite`)", "spandsp", "Tonebridge", "better / Q.24"], rows)


def _fmt(v: object) -> str:
    return "-" if v is None else str(v)


def mitel_table(sp: tuple[dict, str], tb: tuple[dict, str]) -> str:
    def decode(out: str) -> str:
        m = re.search(r"Test 2: Decode check: (\w+) \((\d+)/160", out)
        return f"{m.group(1).lower()} ({m.group(2)}/160)" if m else "?"

    def rrb(d: dict) -> str:
        v = [x["rrb_pct"] for x in d["test3"].values()]
        return f"{min(v):.1f} .. {max(v):.1f}"

    def twist(d: dict, k: str) -> str:
        return f"{min(x[k] for x in d['test4'].values()):.1f}"

    rows = [
        ["Test 2 decode (160 digits)", decode(sp[1]), decode(tb[1]), "all 160"],
        ["Test 3 recognition bandwidth, %", rrb(sp[0]), rrb(tb[0]), ">= 3 + rcfo, < 15 + rcfo"],
        [
            "Test 4 normal twist (worst digit), dB",
            twist(sp[0], "normal_db"),
            twist(tb[0], "normal_db"),
            ">= 8",
        ],
        [
            "Test 4 reverse twist (worst digit), dB",
            twist(sp[0], "reverse_db"),
            twist(tb[0], "reverse_db"),
            ">= 4",
        ],
        [
            "Test 5 dynamic range, dB",
            sp[0]["test5_dynamic_range_db"],
            tb[0]["test5_dynamic_range_db"],
            ">= 35",
        ],
        ["Test 6 guard time, ms", sp[0]["test6_guard_time_ms"], tb[0]["test6_guard_time_ms"], "(no mark)"],
        [
            "Test 7 S/N for 1000/1000, dB",
            sp[0]["test7_snr_db"],
            tb[0]["test7_snr_db"],
            "<= 26 (9 is the floor)",
        ],
        [
            "dial tone: signal to dial tone ratio, dB",
            sp[0]["dialtone_ratio_db"],
            tb[0]["dialtone_ratio_db"],
            "<= 10",
        ],
        ["Overall", "pass" if sp[0]["passed"] else "**FAIL**", "pass" if tb[0]["passed"] else "**FAIL**", ""],
    ]
    return md_table(
        ["Mitel CM7291 (bench `mitel`)", "spandsp", "Tonebridge", "pass mark"],
        [[str(c) for c in r] for r in rows],
    )


def talkoff_table(res: dict[str, dict]) -> str:
    rows = []
    for (det, gain), r in res.items():
        digits = "".join(d * n for d, n in r["by_digit"].items())
        rows.append(
            [
                det,
                f"{gain:+g} dB",
                str(r["files"]),
                f"{r['hours']:.2f}",
                str(r["false_digits"]),
                digits or "-",
            ]
        )
    return md_table(["talk-off (bench `talkoff`)", "gain", "files", "hours", "false digits", "which"], rows)


# -- speed ------------------------------------------------------------------------------------------------


def speed(bench_dir: Path, seconds: float, bank_legs: int) -> dict[str, float]:
    """Detector time alone (no signal generation) on a bench-like mix: keyed digits, then speech."""
    sys.path.insert(0, str(bench_dir))
    import dtmfgen as g  # type: ignore[import-not-found]
    from spandsp_ref import SpandspDTMF  # type: ignore[import-not-found]

    from tonebridge.media.dtmf import DtmfDetector, DtmfDetectorBank

    rng = np.random.default_rng(2024)
    keys = g.sequence(g.ALL16 * 40, on_ms=50, off_ms=100, rng=rng)
    speech = (
        np.concatenate([g.load_wav_8k(str(f)) for f in sorted(SPEECH.glob("*.wav"))[:60]])
        if SPEECH.is_dir()
        else np.zeros(0)
    )
    x = g.apply_codec(np.concatenate([keys, speech])[: int(seconds * g.FS)], "ulaw")
    x = x[: len(x) // 160 * 160]
    frames = x.reshape(-1, 160)
    audio_s = len(x) / g.FS

    def per_leg(make: Callable[[], object]) -> float:
        det = make()
        t0 = time.perf_counter()
        for f in frames:
            det.feed(f)  # type: ignore[attr-defined]
        return audio_s / (time.perf_counter() - t0)

    res = {"audio_s": audio_s, "ours_single": per_leg(DtmfDetector), "spandsp_single": per_leg(SpandspDTMF)}
    # The bank: every leg hears the same mix from its own starting point, all fed in one call per tick.
    ticks = min(len(frames), 500)
    starts = rng.integers(0, len(frames), bank_legs)
    bank = DtmfDetectorBank()
    legs = list(range(bank_legs))
    elapsed = 0.0
    for k in range(ticks):
        block = frames[(starts + k) % len(frames)]
        t0 = time.perf_counter()
        bank.feed(legs, block)
        elapsed += time.perf_counter() - t0
    res["ours_bank"] = bank_legs * ticks * 0.02 / elapsed
    res["bank_legs"] = bank_legs
    res["bank_tick_ms"] = elapsed / ticks * 1000
    return res


# -- main -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", type=Path, default=DEFAULT_BENCH, help="the dtmf-bench directory")
    ap.add_argument("--reps", type=int, default=4, help="suite: repetitions of the 16 digits per condition")
    ap.add_argument("--quick", action="store_true", help="suite: coarser sweeps")
    ap.add_argument("--holdout", action="store_true", help="also: other seeds, A-law, other speakers")
    ap.add_argument("--bank-legs", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/dtmf.md alone")
    args = ap.parse_args(argv)

    missing = [str(p) for p in (SPEECH, MUSIC) if not p.is_dir()]
    if missing:
        raise SystemExit(
            f"talk-off corpus missing ({', '.join(missing)}): run bash {args.bench}/install-deps.sh"
        )

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dtmf-quality-") as tmp:
        b = Bench(args.bench.resolve(), Path(tmp), args.reps, args.quick)
        print("running the bench (suite, mitel, talkoff) for both detectors ...", file=sys.stderr)
        suite = {name: b.run("suite", det, f"suite-{name}") for name, det in DETECTORS}
        mitel = {name: b.run("mitel", det, f"mitel-{name}") for name, det in DETECTORS}
        talk: dict[tuple[str, float], dict] = {}
        for name, det in DETECTORS:
            for gain in (0.0, 6.0):
                extra = ["--gain-db", str(gain), str(SPEECH), str(MUSIC)]
                talk[(name, gain)] = b.run("talkoff", det, f"talkoff-{name}-{gain:g}", extra)[0]
        holdout: list[list[str]] = []
        if args.holdout:
            for reps, codec in ((3, "ulaw"), (5, "alaw")):
                b.reps = reps
                res, _, _ = b.run("suite", OURS_ARGS, f"suite-ours-{reps}-{codec}", ["--codec", codec])
                fails = [req for req, _, v in res["q24"] if v != "PASS"]
                holdout.append(
                    [
                        f"`suite --reps {reps} --codec {codec}` (other seeds)",
                        "all Q.24 rows pass" if not fails else "FAIL: " + "; ".join(fails),
                    ]
                )
            b.reps = args.reps
            dirs = [d for d in (SPEECH.parent / n for n in HOLDOUT_SPEECH) if d.is_dir()]
            for gain in (0.0, 6.0, 12.0):
                if not dirs:
                    break
                extra = ["--gain-db", str(gain), *map(str, dirs)]
                res, _, _ = b.run("talkoff", OURS_ARGS, f"talkoff-holdout-{gain:g}", extra)
                holdout.append(
                    [
                        f"talk-off, other speakers ({', '.join(d.name for d in dirs)}) at {gain:+g} dB",
                        f"{res['false_digits']} false digits in {res['hours']:.2f} h ({res['files']} files)",
                    ]
                )
        print("timing the detectors alone ...", file=sys.stderr)
        sp_speed = speed(b.score.parent, 120.0, args.bank_legs)
        log = b.log

    sp_s, tb_s = suite["spandsp"][0], suite["Tonebridge"][0]
    q24, worse = q24_table(sp_s, tb_s)
    audio_min = sum(r["audio_s"] for r in tb_s["rows"]) / 60
    speed_rows = [
        [
            "bench `suite` wall time (includes generating the signals)",
            f"{sp_s['wall_s']:.1f} s for {audio_min:.1f} min of audio = {audio_min * 60 / sp_s['wall_s']:.0f} legs",
            f"{tb_s['wall_s']:.1f} s = {audio_min * 60 / tb_s['wall_s']:.0f} legs",
        ],
        [
            f"detector alone, one leg, 20 ms frames ({sp_speed['audio_s']:.0f} s of keys and speech)",
            f"{sp_speed['spandsp_single']:.0f} legs",
            f"{sp_speed['ours_single']:.0f} legs",
        ],
        [
            f"detector alone, `DtmfDetectorBank`, {sp_speed['bank_legs']:.0f} legs per tick",
            "-",
            f"{sp_speed['ours_bank']:.0f} legs ({sp_speed['bank_tick_ms']:.1f} ms per 20 ms tick)",
        ],
    ]
    parts = [
        f"Measured by `bench/dtmf_quality.py{' --holdout' if args.holdout else ''}` on {time.strftime('%Y-%m-%d')} "
        f"(bench `suite --reps {args.reps}{' --quick' if args.quick else ''}`, G.711 u-law, 20 ms frames; "
        f"{(time.perf_counter() - started) / 60:.1f} min).",
        "",
        q24,
        "",
        "Rows where Tonebridge does worse than spandsp: " + (", ".join(worse) if worse else "none."),
        "",
        figures_table(sp_s, tb_s),
        "",
        mitel_table(mitel["spandsp"][:2], mitel["Tonebridge"][:2]),
        "",
        talkoff_table(talk),
        "",
        md_table(["speed: legs one core runs in real time", "spandsp", "Tonebridge"], speed_rows),
    ]
    if holdout:
        parts += ["", md_table(["hold-out (Tonebridge only)", "result"], holdout)]
    parts += ["", "Bench commands run:", "", "```", *log, "```"]
    table = "\n".join(parts)
    print(table)
    if not args.no_write:
        text = DOC.read_text() if DOC.exists() else f"# DTMF\n\n{BEGIN}\n{END}\n"
        if BEGIN not in text or END not in text:
            text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        DOC.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
        print(f"\nwrote the tables into {DOC.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
