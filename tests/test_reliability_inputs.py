"""Property tests: whatever a user writes in an adapter config or on the command line, samplm either
accepts it or answers with one of its own errors (never a crash, a huge allocation or a traceback)."""

from __future__ import annotations

import contextlib
import io
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samplm import AdapterConfig, PromptAdapter
from samplm.cli import main
from samplm.constants import ADAPTER_FORMAT, ADAPTER_FORMAT_VERSION
from samplm.errors import SamplmError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Scalars a user may plausibly write: small valid sizes, the edges, huge sizes, the wrong JSON types.
SCALARS = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([0, 1, 2, 4, 8, 16, 32, 1 << 20, 2**31, 2**63, -(2**40)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
)
PLM_KEYS = ["embed_dim", "num_heads", "mlp_dim", "attention_downsample_rate", "activation"]
PMM_KEYS = ["in_dim", "hidden_dim", "num_heads", "mlp_dim", "depth", "num_points", "dropout", "max_offset"]


def _section(keys: list[str]) -> st.SearchStrategy:
    values = st.one_of(SCALARS, st.sampled_from(["relu", "gelu"]))
    return st.dictionaries(st.sampled_from([*keys, "typo"]), values, max_size=len(keys)) | JSON


CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        "task": st.one_of(st.just("nose"), SCALARS),
        "plm": _section(PLM_KEYS),
        "pmm": st.one_of(st.none(), _section(PMM_KEYS)),
        "prompt_types": st.one_of(st.lists(st.sampled_from(["point", "box", "mask", "scribble"])), JSON),
        "base_model": st.one_of(
            st.dictionaries(st.sampled_from(["model_type", "fingerprint", "checkpoint"]), SCALARS), JSON
        ),
        "samplm_version": SCALARS,
        "weights_sha256": SCALARS,
        "metadata": JSON,
        "format_version": st.one_of(st.just(ADAPTER_FORMAT_VERSION), SCALARS),
        "surprise": JSON,
    },
)


def _build(config) -> None:
    """Load ``config`` as a user would; samplm's own errors are the only acceptable failure."""
    try:
        PromptAdapter.from_config(config)
    except SamplmError as exc:
        assert "\n" not in str(exc)


@SETTINGS
@given(CONFIGS)
def test_random_adapter_configs_load_or_raise_samplm_errors(config):
    _build(config)
    with contextlib.suppress(SamplmError):
        AdapterConfig.from_dict({"format": ADAPTER_FORMAT, **config}, source="<test>")


@SETTINGS
@given(
    st.one_of(
        CONFIGS.map(lambda c: json.dumps({"format": ADAPTER_FORMAT, "format_version": 1, **c})),
        JSON.map(json.dumps),
        st.integers(1, 5000).map(lambda depth: "[" * depth + "]" * depth),
        st.integers(1, 5000).map(lambda depth: '{"format": "samplm-adapter", "metadata": ' + "[" * depth),
        st.text(max_size=40),
    )
)
def test_random_config_files_load_or_raise_samplm_errors(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "adapter_config.json"
    path.write_text(text, encoding="utf-8")
    _build(path)


def _job_argv(command: str, data, out, option: str) -> list[str]:
    """``samplm <command>`` on a missing COCO file with one extra ``--flag=value``."""
    return [
        command,
        "--data",
        str(data),
        "--format",
        "coco",
        "--model-type",
        "samplm_tiny",
        "--out",
        str(out),
        option,
    ]


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue().strip()


FLAGS = {
    "train": [
        "--seed",
        "--lr",
        "--steps",
        "--batch-size",
        "--val-fraction",
        "--grad-accum",
        "--val-every",
        "--pmm-points",
        "--box-probability",
        "--center-power",
        "--extra-points",
        "--warmup-steps",
        "--decay-at",
        "--device",
        "--recipe",
        "--multimask",
        "--use-pmm",
    ],
    "eval": [
        "--seed",
        "--max-instances",
        "--samf-steps",
        "--val-fraction",
        "--sensitivity",
        "--visuals",
        "--device",
        "--prompt",
    ],
}
VALUES = st.one_of(
    st.integers(-10, 10).map(str),
    st.sampled_from(
        [
            "inf",
            "-inf",
            "nan",
            "1e-4",
            "1.5",
            "0",
            "-1",
            "-5",
            "1e400",
            "cpu",
            "cuda",
            "mps",
            "bogus",
            "",
            " ",
            "2**3",
            "0x10",
            "1_000",
        ]
    ),
    st.floats(allow_nan=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
)


@SETTINGS
@given(st.sampled_from(sorted(FLAGS)), st.data())
def test_random_flag_values_give_one_error_line(tmp_path_factory, command, data):
    flag = data.draw(st.sampled_from(FLAGS[command]))
    value = data.draw(VALUES)
    where = tmp_path_factory.getbasetemp() / "nowhere"
    argv = _job_argv(command, where, where / "out", f"{flag}={value}")
    code, err = _run(argv)
    assert code == 2, (argv, err)
    assert err.startswith("samplm: error: ") and "\n" not in err and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("train", "--seed", "-1"),
        ("train", "--lr", "inf"),
        ("train", "--lr", "nan"),
        ("train", "--steps", "0"),
        ("train", "--batch-size", "0"),
        ("train", "--val-fraction", "1.5"),
        ("eval", "--max-instances", "0"),
        ("eval", "--samf-steps", "-5"),
        ("eval", "--val-fraction", "-0.1"),
    ],
)
def test_bad_flag_values_are_named_before_the_data_is_read(tmp_path, command, flag, value):
    where = tmp_path / "nowhere"
    argv = _job_argv(command, where, tmp_path / "out", f"{flag}={value}")
    code, err = _run(argv)
    assert code == 2 and err.startswith(f"samplm: error: {flag} must be") and "nowhere" not in err, err


def test_progress_bars_print_a_line_every_few_percent_in_logs():
    from samplm.utils.progress import LogLines, progress_bar

    log = io.StringIO()  # not a terminal
    bar = progress_bar(range(1000), desc="embedding images", unit="img", file=log)
    assert isinstance(bar, LogLines)
    for _ in bar:
        bar.set_postfix(loss=0.5)  # refreshes are throttled like updates
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and 20 <= len(lines) <= 22
    assert lines[0].startswith("embedding images:   0% 0/1000") and "100% 1000/1000" in lines[-1]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not isinstance(progress_bar(range(3), file=Terminal()), LogLines)
    assert progress_bar(range(3), file=log, disable=True).disable


def test_progress_lines_stay_every_few_percent_under_tqdms_monitor_thread():
    """tqdm's monitor (started by any other bar in the process) sets ``miniters`` to 1 on a bar that
    has not printed for ``maxinterval`` seconds; the log must still get a line per 5 %, not per step."""
    from tqdm import tqdm
    from tqdm._monitor import TMonitor

    from samplm.utils.progress import progress_bar

    log = io.StringIO()
    bar = progress_bar(total=200, desc="training", unit="step", file=log, maxinterval=0.05)
    monitor = TMonitor(tqdm, 0.01)
    try:
        deadline = time.monotonic() + 5
        while bar.miniters != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bar.miniters == 1  # the monitor really lowered it
        for _ in range(200):
            bar.update(1)
            bar.set_postfix(loss=0.5)
    finally:
        monitor.exit()
        bar.close()
    lines = log.getvalue().splitlines()
    assert 20 <= len(lines) <= 22, lines[:5]
