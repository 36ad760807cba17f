"""Hostile spec files: whatever text arrives, the loader and `pipeflow check` answer with a
SpecError (or GraphError) naming file:line, never another exception, and never run code.

Generated documents mix valid specs, broken YAML, random keys, deep nesting, huge values, unicode
and control characters, YAML tags that would run code under an unsafe loader
(``!!python/object/apply:os.system``, ``!!python/name:``, ``%TAG`` and verbatim ``!<...>``
spellings), anchors, aliases and merge keys (bombs kept small here; the full-size bombs have their
own tests, with a memory bound), and duplicate keys. Each example also checks that no marker file
was created by a payload.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import cpu_limit, pipeflow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeflow.core.compiler import compile_pipeline
from pipeflow.errors import SpecError
from pipeflow.spec import loads
from pipeflow.spec.yamlsrc import MAX_DEPTH, parse

FILE = "hostile.yaml"
#: payloads try to create this file (absolute) or ./PWNED (relative to the working directory)
MARKER = Path(tempfile.gettempdir()) / f"pipeflow-hostile-{os.getpid()}" / "PWNED"
QUICK = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
THOROUGH = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def in_a_scratch_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run from an empty directory, so a relative `touch PWNED` would be seen."""
    where = tmp_path_factory.mktemp("cwd")
    MARKER.parent.mkdir(parents=True, exist_ok=True)
    before = os.getcwd()
    os.chdir(where)
    try:
        yield where
    finally:
        os.chdir(before)
        assert not MARKER.exists() and not (where / "PWNED").exists(), "a payload ran"


def no_code_ran() -> None:
    assert not MARKER.exists(), f"a payload created {MARKER}"
    assert not Path("PWNED").exists(), "a payload created ./PWNED"


# ----------------------------------------------------------------------------- strategies

RUN_CODE = [
    '!!python/object/apply:os.system ["touch PWNED"]',
    f'!!python/object/apply:os.system ["touch {MARKER}"]',
    f'!!python/object/apply:subprocess.check_call [["touch", "{MARKER}"]]',
    f"!!python/object/apply:builtins.exec [\"open('{MARKER}', 'w')\"]",
    f"!!python/object/apply:builtins.eval [\"open('{MARKER}', 'w')\"]",
    f'!!python/object/new:subprocess.Popen [["touch", "{MARKER}"]]',
    "!!python/name:os.system",
    "!!python/module:os",
    f'!!python/object:pathlib.Path {{"_raw_paths": ["{MARKER}"]}}',
    f'!<tag:yaml.org,2002:python/object/apply:os.system> ["touch {MARKER}"]',
]
CODE = [
    *RUN_CODE,
    "!!python/tuple [1, 2]",
    "!!python/bytes 'AAAA'",
    '!!binary "/w=="',
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!pairs [a: 1]",
    "!!int abc",
    "!!float abc",
    "!!bool maybe",
    "!!null x",
    "!!timestamp 2024-13-45",
    "!custom {a: 1}",
    "!!str [1]",
    "!!map [1]",
    "!!seq {a: 1}",
]
TAG_DIRECTIVE = (
    "%TAG !p! tag:yaml.org,2002:python/object/apply:\n"
    "---\n"
    f'pipeline: !p!os.system ["touch {MARKER}"]\n'
    "stages: {a: {type: python, with: {function: 's:f'}}}\n"
)

SCALARS = [
    "~",
    "null",
    "yes",
    "no",
    "on",
    "off",
    ".inf",
    "-.inf",
    ".nan",
    "0x1f",
    "0o17",
    "0b101",
    "1_000",
    "1:30:00",
    "2024-02-30",
    "2024-01-01T10:00:00Z",
    "1e999",
    "-0",
    "'${params.x}'",
    "'${params.}'",
    "'${env:HOME}'",
    "'${env:PIPEFLOW_NO_SUCH_VAR}'",
    "'${env:X:-dflt}'",
    "'$${params.x}'",
    "'${'",
    "'${params.x.y.z}'",
    "'${ nope }'",
    '"\\ud800"',
    '"\\x00"',
    '"\\U0001F600"',
    "é",
    "\u202e",
    "\u2028",
    "日本",
    "'' ",
    '""',
    "|\n  block\n",
    ">-\n  folded\n",
    "*undefined",
]
HUGE = [
    lambda: "9" * 5000,
    lambda: "0x" + "f" * 5000,
    lambda: "1" + ":59" * 3000,
    lambda: "-" + "9" * 4299,
    lambda: "x" * 1_000_000,
    lambda: "'" + "é" * 200_000 + "'",
    lambda: "[" + ", ".join(["1"] * 20_000) + "]",
    lambda: "{" + ", ".join(f"k{i}: {i}" for i in range(5_000)) + "}",
    lambda: "k" * 100_000,
]
TOKENS = [
    "pipeline: p\n",
    "pipeline: Not Valid\n",
    "stages:\n",
    "  a:\n",
    "  b:\n",
    "  a:\n",  # a duplicate key when it follows another "  a:"
    "    type: python\n",
    "    type: train\n",
    "    type: no_such_type\n",
    "    with: {function: 's:f'}\n",
    "    inputs: {x: a}\n",
    "    inputs: {x: b.out}\n",
    "    retries: -1\n",
    "    timeout_s: 0\n",
    "params: {x: 1}\n",
    "params:\n",
    "executor: {kind: distributed, address: 'tcp://1.2.3.4:1'}\n",
    "store: {root: ../../../../etc}\n",
    "&x ",
    "*x",
    "<<: ",
    "<<: *x\n",
    "? ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    "'",
    '"',
    "\t",
    "  ",
    "\n",
    "\r\n",
    "\x85",
    "\ufeff",
    "%YAML 1.1\n",
    "%YAML 9.9\n",
    "---\n",
    "...\n",
    "|\n",
    ">\n",
    "#",
    "\\",
    "\x00",
    "\x07",
    "\x1b[31m",
    "\ud800",
    "é",
    "${params.x}",
    "$${",
    *CODE,
    *SCALARS,
]

INSTALLED = ["python", "ingest", "split", "validate", "transform", "train", "tune", "evaluate"]
INSTALLED += ["promote", "serve", "monitor", "predict"]
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
any_text = st.text(max_size=20)
json_ish = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["${params.x}", "${env:HOME}", "$${x}", "s:f", "steps:f"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)


# built once: a strategy made inside a draw is validated again at every draw (most of the cost
# of generating these examples, more than loading them)
stage_types = st.sampled_from(INSTALLED) | any_text
stage_withs = st.fixed_dictionaries({"function": st.just("s:f")}, optional={"kwargs": json_ish}) | (
    st.dictionaries(any_text, json_ish, max_size=4)
)
stage_options = st.dictionaries(
    st.sampled_from(["retries", "timeout_s", "cache", "rtries"]), json_ish, max_size=2
)
input_names = names | any_text
pipeline_names = st.sampled_from(["p", "my-pipe", "Bad Name", ""]) | any_text
spec_params = st.dictionaries(any_text, json_ish, max_size=3)
spec_extras = st.dictionaries(any_text, json_ish, max_size=2)
flow_styles = st.sampled_from([False, True, None])
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@st.composite
def structured_specs(draw: st.DrawFn) -> str:
    """A spec built as data (mostly plausible, sometimes wrong), dumped as YAML."""
    stage_names = draw(st.lists(names | any_text, min_size=0, max_size=6, unique=True))
    stages: dict = {}
    for name in stage_names:
        stage: dict = {"type": draw(stage_types)}
        if draw(st.booleans()):
            stage["inputs"] = draw(
                st.dictionaries(
                    input_names, st.sampled_from(stage_names or ["x"]) | any_text, max_size=3
                )
            )
        stage["with"] = draw(stage_withs)
        stage.update(draw(stage_options))
        stages[name] = stage
    spec = {"pipeline": draw(pipeline_names), "params": draw(spec_params), "stages": stages}
    spec.update(draw(spec_extras))
    return yaml.dump(  # libyaml's emitter: PyYAML's own was a fifth of drawing these
        spec,
        Dumper=DUMPER,
        sort_keys=False,
        allow_unicode=draw(st.booleans()),
        default_flow_style=draw(flow_styles),
    )


@st.composite
def alias_bombs(draw: st.DrawFn) -> str:
    """Billion laughs through lists or merge keys, kept to at most ~50k values here."""
    width = draw(st.integers(2, 9))
    depth = draw(st.integers(1, 12))
    while width**depth > 50_000:
        depth -= 1
    if draw(st.booleans()):
        lines = ["a0: &a0 [lol, lol]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    else:  # merges, the definitions nested inside the merge lists
        node = "&a0 {x: 1, y: 2}"
        for i in range(1, depth + 1):
            node = f"&a{i} {{<<: [{node}, {', '.join([f'*a{i - 1}'] * (width - 1))}], k{i}: *a0}}"
        lines = [f"bomb: {node}"]
    return "\n".join(lines) + "\n" + draw(st.sampled_from(["", "pipeline: p\nstages: {}\n"]))


@st.composite
def deep_nesting(draw: st.DrawFn) -> str:
    depth = draw(st.sampled_from([MAX_DEPTH - 2, MAX_DEPTH, MAX_DEPTH + 1, 500, 1_100, 20_000]))
    kind = draw(st.sampled_from(["flow_list", "flow_map", "block"]))
    if kind == "flow_list":
        return "a: " + "[" * depth + "]" * depth + "\n"
    if kind == "flow_map":
        return "a: " + "{k: " * depth + "1" + "}" * depth + "\n"
    depth = min(depth, 1_100)  # libyaml stops at 1000 levels; one-space indents keep it small
    return "".join(" " * i + "k:\n" for i in range(depth)) + " " * depth + "v\n"


@st.composite
def tagged_specs(draw: st.DrawFn) -> str:
    """A valid spec with one value (or key, or stage) replaced by a tagged or odd scalar."""
    payload = draw(st.sampled_from(CODE + SCALARS))
    where = draw(st.sampled_from(["pipeline", "param", "kwarg", "type", "top", "key"]))
    base = {
        "pipeline": "pipeline: p\n",
        "param": "params:\n  x: {v}\n",
        "kwarg": "",
        "type": "",
        "top": "{v}\n",
        "key": "? {v}\n: 1\n",
    }[where].replace("{v}", payload)
    stage_type = payload if where == "type" else "python"
    kwarg = payload if where == "kwarg" else "'${params.x}'"
    text = (
        ("pipeline: p\n" if where != "pipeline" else f"pipeline: {payload}\n")
        + (base if where in ("param", "top", "key") else "params: {x: 1}\n")
        + "stages:\n"
        + f"  a:\n    type: {stage_type}\n    with:\n      function: 's:f'\n      kwargs:\n        k: {kwarg}\n"
    )
    return text


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """Text with random splices: inserted tokens, deleted ranges, duplicated lines."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["insert", "delete", "duplicate_line", "truncate"]))
        at = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif op == "duplicate_line":
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i])
                text = "".join(lines)
        else:
            text = text[:at]
    return text


token_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
huge_values = st.sampled_from(HUGE).map(
    lambda make: (
        f"pipeline: p\nparams:\n  big: {make()}\nstages: {{a: {{type: python, with: {{function: 's:f', kwargs: {{v: '${{params.big}}'}}}}}}}}\n"
    )
)
hostile_specs = st.one_of(
    structured_specs(),
    mutated(structured_specs()),
    tagged_specs(),
    mutated(tagged_specs()),
    token_soup,
    alias_bombs(),
    deep_nesting(),
    huge_values,
    st.just(TAG_DIRECTIVE),
    st.text(max_size=200),
    mutated(st.text(max_size=100)),
)


# ----------------------------------------------------------------------------- the property


def assert_loads_or_names_a_line(text: str) -> None:
    """`loads` + compile either succeed (and the result is usable) or raise a SpecError whose
    every problem names this file and a line. Any other exception fails the test."""
    try:
        loaded = loads(text, FILE)
        compile_pipeline(loaded)
        assert len(loaded.digest) == 64  # `pipeflow run` hashes the resolved spec
    except SpecError as err:  # GraphError is a SpecError
        assert err.problems, "a SpecError must list its problems"
        for problem in err.problems:
            loc = problem.location
            assert loc is not None and loc.file == FILE and loc.line, f"no file:line: {problem}"
            assert loc.line >= 1 and (loc.column is None or loc.column >= 1)
        assert str(err).startswith(f"{FILE}:")
    finally:
        no_code_ran()


@QUICK
@given(hostile_specs)
def test_hostile_specs_load_or_raise_a_spec_error_naming_file_and_line(text: str) -> None:
    assert_loads_or_names_a_line(text)


# ~75 s alone, 110 s beside the other xdist worker, more on a busy machine (an example takes 1-20
# ms of CPU): the hang guard is each example's CPU time, which load does not stretch (a spinning
# example fails there, shrunk and named by hypothesis), and for one stuck without spinning
# pytest-timeout's wall clock at three times the suite's 600 s
@pytest.mark.slow
@pytest.mark.timeout(1800)
@THOROUGH
@given(hostile_specs)
def test_ten_thousand_hostile_specs_load_or_raise_a_spec_error_naming_file_and_line(
    text: str,
) -> None:
    with cpu_limit(30):
        assert_loads_or_names_a_line(text)


# the ids name the marker, not its path: the path holds the process id, and pytest-xdist's workers
# must collect the same ids
@pytest.mark.parametrize(
    "payload",
    [*RUN_CODE, TAG_DIRECTIVE],
    ids=lambda p: "%TAG directive" if p.startswith("%TAG") else p.replace(str(MARKER), "MARKER"),
)
def test_yaml_tags_that_would_run_code_are_refused_with_their_line(payload: str) -> None:
    text = payload if payload.startswith("%TAG") else f"pipeline: p\nparams:\n  x: {payload}\n"
    with pytest.raises(SpecError) as caught:
        loads(text, FILE)
    assert caught.value.location is not None and caught.value.location.line in (3, 4)
    no_code_ran()


# ----------------------------------------------------------------------------- bombs, full size


def _peak_while(text: str) -> tuple[SpecError | None, float, int]:
    """The error of parsing ``text``, the CPU seconds it took (this thread's: a bound on the work,
    which a loaded machine does not stretch as it does the wall clock) and its peak memory."""
    tracemalloc.start()
    started = time.thread_time()
    try:
        parse(text, FILE)
        error = None
    except SpecError as err:
        error = err
    finally:
        elapsed = time.thread_time() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, elapsed, peak


def test_billion_laughs_is_refused_with_bounded_memory_and_time() -> None:
    """9^9 = 387 million values if expanded; the walker stops at MAX_NODES (1,000,000)."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    error, elapsed, peak = _peak_while("\n".join(lines) + "\n")
    assert error is not None and "alias bomb" in str(error) and str(error).startswith(FILE)
    assert peak < 600 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert elapsed < 30


@pytest.mark.parametrize("levels", [8, 30])
def test_merge_key_bombs_stay_small_whatever_pyyaml_flatten_does(levels: int) -> None:
    """Merges nested inside merge lists: PyYAML before 6.0.4 kept every duplicate pair, 9^8
    pairs at 8 levels (about 12 GB) before anything counted them. pipeflow resolves merges itself,
    one pair per key."""
    node = "&a0 {x: 1, y: 2}"
    for i in range(1, levels + 1):
        node = f"&a{i} {{<<: [{node}, {', '.join([f'*a{i - 1}'] * 8)}]}}"
    error, elapsed, peak = _peak_while(f"t: {node}\n")
    if levels > MAX_DEPTH // 2:
        assert error is None or "deeper" in str(error) or "expands" in str(error)
    else:
        assert error is None
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert elapsed < 5


def test_a_mapping_that_merges_itself_is_refused_with_its_line() -> None:
    with pytest.raises(SpecError) as caught:
        parse("a: 1\nb: &m\n  c: 2\n  <<: *m\n", FILE)
    assert caught.value.location is not None and caught.value.location.line >= 2


# ----------------------------------------------------------------------------- merge semantics


def _classic_flatten(self: yaml.constructor.SafeConstructor, node: yaml.MappingNode) -> None:
    """PyYAML's flatten_mapping as it was until 6.0.3: YAML merge semantics (the first merged
    mapping wins, the mapping's own keys win over all), without any deduplication."""
    merge: list = []
    index = 0
    while index < len(node.value):
        key_node, value_node = node.value[index]
        if key_node.tag == "tag:yaml.org,2002:merge":
            del node.value[index]
            subs = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            submerge = []
            for sub in subs:
                _classic_flatten(self, sub)
                submerge.append(sub.value)
            for value in reversed(submerge):
                merge.extend(value)
        else:
            index += 1
    if merge:
        node.value = merge + node.value


class _ClassicLoader(yaml.SafeLoader):
    flatten_mapping = _classic_flatten


keys = st.from_regex(r"[a-z]{2,4}", fullmatch=True).filter(
    lambda k: k not in {"yes", "no", "on", "off", "true", "false", "null"}
)


@st.composite
def merge_documents(draw: st.DrawFn) -> str:
    lines = []
    for i in range(draw(st.integers(1, 6))):
        own = draw(st.dictionaries(keys, st.integers(0, 9), max_size=4))
        parts = [f"{k}: {v}" for k, v in own.items()]
        if i and draw(st.booleans()):
            refs = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=4))
            merged = ", ".join(f"*m{r}" for r in refs)
            parts.insert(draw(st.integers(0, len(parts))), f"<<: [{merged}]")
        lines.append(f"m{i}: &m{i} {{{', '.join(parts)}}}")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None)
@given(merge_documents())
def test_merge_keys_resolve_as_yaml_specifies(text: str) -> None:
    """The same values as PyYAML's classic merge (which PyYAML 6.0.4 changed: it lets a later
    merged mapping win when two keys of the same text are distinct strings)."""
    assert parse(text, FILE).data == yaml.load(text, Loader=_ClassicLoader)  # noqa: S506


def test_merged_keys_come_first_in_the_order_their_mappings_are_listed() -> None:
    text = "a: &a {x: 1, y: 1}\nb: &b {zz: 2, x: 2}\nc: {own: 3, <<: [*a, *b], y: 3}\n"
    got = parse(text, FILE).data["c"]
    assert got == {"x": 1, "y": 3, "zz": 2, "own": 3}
    assert list(got) == ["x", "y", "zz", "own"]


# ----------------------------------------------------------------------------- the command line


def _check_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    done = pipeflow(["check", path])
    out = done.stdout + done.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    if done.returncode == 0:
        assert done.stdout.startswith(f"ok: {path}"), out
    else:
        assert done.returncode == 2, out
        assert done.stderr.startswith("error: "), out
        many = "problems found" in done.stderr.splitlines()[0]
        first = done.stderr.splitlines()[1].strip() if many else done.stderr[len("error: ") :]
        assert first.startswith(f"{path}:") and first[len(str(path)) + 1].isdigit(), out
    no_code_ran()


spec_bytes = hostile_specs.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(
    max_size=300
)
_numbers = itertools.count()
CLI = dict(deadline=None, suppress_health_check=list(HealthCheck))


@settings(max_examples=25, **CLI)
@given(data=spec_bytes)
def test_pipeflow_check_names_file_and_line_for_hostile_specs(tmp_path: Path, data: bytes) -> None:
    _check_file(tmp_path / f"spec-{next(_numbers)}.yaml", data)


def _named(stderr: str) -> list[str]:
    """The file each ``error:`` of ``pipeflow check``'s stderr names first (a multi-problem
    error's first problem), as it names it: ``PATH:LINE...``."""
    lines, named = stderr.splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith("error: "):
            many = "problems found" in line
            named.append(lines[i + 1].strip() if many else line[len("error: ") :])
    return named


@pytest.mark.slow
@settings(max_examples=1, **CLI)
@given(specs=st.lists(spec_bytes, min_size=100, max_size=100))
def test_pipeflow_check_names_file_and_line_for_a_hundred_hostile_specs(
    tmp_path: Path, specs: list[bytes]
) -> None:
    """A hundred hostile specs checked by one ``pipeflow check``: each is either ``ok`` or named
    in an error with its line, none both, none left out; exit 2 if any failed."""
    folder = tmp_path / f"hundred-{next(_numbers)}"
    folder.mkdir()
    paths = [folder / f"spec-{i}.yaml" for i in range(len(specs))]
    for path, data in zip(paths, specs, strict=True):
        path.write_bytes(data)
    done = pipeflow(["check", *paths])
    out = done.stdout + done.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    ok = {line.split(": ")[1] for line in done.stdout.splitlines() if line.startswith("ok: ")}
    failed = set()
    for first in _named(done.stderr):
        name, sep, rest = first.partition(".yaml:")
        assert sep and rest[:1].isdigit(), first  # the file, then its line
        failed.add(name + ".yaml")
    assert not ok & failed and ok | failed == {str(p) for p in paths}, out
    assert done.returncode == (2 if failed else 0), out
    no_code_ran()
