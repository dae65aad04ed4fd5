"""`data pull` / `data list` / ensure_task_data against a local HTTP server (127.0.0.1, port 0).

The server serves ../shared/data as a mirror (``<mirror>/<folder>/<file>``), or a tree laid out like
raw.githubusercontent.com (``<owner>/<repo>/<commit>/<path>``) with the table's GITHUB_RAW pointed at it, so the
real download, checksum, transform and error paths run. Nothing here touches the network.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import pickle
import re
import socket
import sys
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from contrastive_decoding.benchmarks import data, data_sources
from contrastive_decoding.benchmarks.data_cli import data as data_group
from contrastive_decoding.benchmarks.data_sources import BRING_YOUR_OWN, FILES, FOLDERS

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"../shared/data (the test copy of the benchmark data) not found at {SHARED}"
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Quiet(SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


class _CutOff(_Quiet):
    """Announces more bytes than it sends, then closes the connection: an interrupted download."""

    def do_GET(self) -> None:
        self.requests.append(self.path)
        body = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + 1000))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


@contextmanager
def serve(directory: Path, handler: type[_Quiet] = _Quiet) -> Iterator[tuple[str, list[str]]]:
    """``(base URL, list of requested paths)`` of an HTTP server on 127.0.0.1 serving ``directory``."""
    requests: list[str] = []
    handler_class = type("Handler", (handler,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler_class, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty package cache; the data env vars unset. Returns the data root inside it."""
    monkeypatch.setenv("CONTRASTIVE_DECODING_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    return tmp_path / "cache" / "data"


@pytest.fixture
def mirror() -> Iterator[tuple[str, list[str]]]:
    if not SHARED.is_dir():
        pytest.skip(f"../shared/data (the test copy of the benchmark data) not found at {SHARED}")
    with serve(SHARED) as served:
        yield served


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*")) if folder.exists() else []


# --------------------------------------------------------------------------------------------- pulling


def test_ensure_task_data_pulls_a_task_into_the_cache_and_load_reads_it(cache, mirror):
    from contrastive_decoding.benchmarks.tasks import get_task

    url, requests = mirror
    messages: list[str] = []
    task = get_task("memotrap")
    root = data.ensure_task_data(task, mirror=url, progress=messages.append)
    assert root == cache
    for relative in task.data_files:
        assert _sha256(cache / relative) == FILES[relative].sha256
    assert sorted(requests) == sorted(f"/{relative}" for relative in task.data_files)
    assert not list(cache.rglob("*.part"))
    assert any(f"fetched memotrap/1-proverb-ending.csv (95.2 kB) from {url}/memotrap/" in m for m in messages)
    assert len(task.load(root)) == 2439

    requests.clear()
    assert data.ensure_task_data(task, mirror=url, progress=messages.append) == cache
    assert requests == []  # present and verified: nothing downloaded


def test_resume_downloads_only_what_is_missing(cache, mirror):
    url, requests = mirror
    first = data.pull("memotrap", mirror=url)
    assert (first.kind, len(first.downloaded), first.present) == ("folder", 4, [])
    requests.clear()
    again = data.pull("memotrap", mirror=url)
    assert again.downloaded == [] and len(again.present) == 4 and requests == []

    (cache / "memotrap/2-proverb-translation.csv").unlink()
    (cache / "memotrap/4-history-of-science-qa.csv").write_text("edited\n")  # wrong checksum: fetched again
    resumed = data.pull("memotrap", mirror=url)
    assert sorted(resumed.downloaded) == [
        "memotrap/2-proverb-translation.csv",
        "memotrap/4-history-of-science-qa.csv",
    ]
    assert sorted(requests) == [
        "/memotrap/2-proverb-translation.csv",
        "/memotrap/4-history-of-science-qa.csv",
    ]


def test_a_vision_task_pulls_its_manifest_images_and_synonyms(cache, mirror):
    """The small coco_images folder fully: the chair task needs the manifest, the 20 images it lists, synonyms."""
    from contrastive_decoding.benchmarks.tasks import get_task

    url, _ = mirror
    task = get_task("chair")
    root = data.ensure_task_data(task, mirror=url, progress=None)
    images = sorted(path.name for path in (root / "coco_images/images").iterdir())
    assert len(images) == 20 and images[0] == "COCO_val2014_000000000192.jpg"
    assert not (
        root / "chair/coco2014_imid_to_objects.json"
    ).exists()  # the manifest comes ready from a mirror
    assert len(task.load(root)) == 20


@needs_shared
def test_a_mirror_can_be_a_local_folder(cache, tmp_path):
    result = data.pull("gsm8k", mirror=SHARED)
    assert result.downloaded == ["gsm8k/test.jsonl"]
    umask = os.umask(0)
    os.umask(umask)
    assert (cache / "gsm8k/test.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(data.DataError, match="http://"):
        data.pull("gsm8k", mirror="localhost:8000")


def test_bad_checksum_leaves_no_file_and_says_what_to_do(cache, tmp_path):
    corrupted = tmp_path / "corrupted"
    (corrupted / "gsm8k").mkdir(parents=True)
    (corrupted / "gsm8k/test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    with serve(corrupted) as (url, _):
        with pytest.raises(data.ChecksumError) as error:
            data.pull("gsm8k", mirror=url)
    message = str(error.value)
    assert "gsm8k/test.jsonl" in message and f"{url}/gsm8k/test.jsonl" in message
    assert FILES["gsm8k/test.jsonl"].sha256 in message and "was not saved" in message
    assert "data pull gsm8k" in message
    assert _leftovers(cache / "gsm8k") == []


def test_interrupted_download_leaves_no_file(cache):
    if not SHARED.is_dir():
        pytest.skip(f"../shared/data not found at {SHARED}")
    with serve(SHARED, _CutOff) as (url, _):
        with pytest.raises(data.DownloadError) as error:
            data.pull("gsm8k", mirror=url)
    message = str(error.value)
    assert "interrupted" in message and "gsm8k/test.jsonl" in message and f"{url}/gsm8k/test.jsonl" in message
    assert "nothing was saved" in message and "data pull gsm8k" in message
    assert _leftovers(cache / "gsm8k") == []


def test_offline_gives_one_clear_error(cache, monkeypatch):
    closed = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(data.OfflineError) as error:
        data.pull("memotrap", mirror=closed)
    message = str(error.value)
    assert "unreachable" in message and "--data-dir" in message and data.DATA_DIR_ENV in message
    assert message.count("unreachable") == 1  # the first failure stops the pull
    assert _leftovers(cache / "memotrap") == []

    monkeypatch.setattr(data_sources, "GITHUB_RAW", closed)  # the original sources, unreachable
    with pytest.raises(data.OfflineError, match="--data-dir"):
        data.ensure_task_data("gsm8k", progress=None)

    result = CliRunner().invoke(data_group, ["pull", "gsm8k", "--mirror", closed])
    assert result.exit_code == 1
    assert "unreachable" in result.output and "--data-dir" in result.output


def test_unknown_names_get_a_did_you_mean(cache):
    with pytest.raises(ValueError, match="Did you mean 'truthfulqa-mc'"):
        data.select("truthfulqa-m")
    result = CliRunner().invoke(data_group, ["pull", "gsm8"])
    assert result.exit_code == 1 and "Did you mean 'gsm8k'" in result.output


# --------------------------------------------------------------------------------------------- data dirs


def test_a_given_data_dir_is_used_as_is_and_missing_files_are_named(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(data_sources, "GITHUB_RAW", f"http://127.0.0.1:{_closed_port()}")  # no download
    own = tmp_path / "own"
    (own / "gsm8k").mkdir(parents=True)
    (own / "gsm8k/test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    assert data.ensure_task_data("gsm8k", data_dir=own) == own
    monkeypatch.setenv(data.DATA_DIR_ENV, str(own))
    assert data.ensure_task_data("gsm8k") == own

    with pytest.raises(data.MissingDataError) as error:
        data.ensure_task_data("truthfulqa-mc")
    message = str(error.value)
    assert str(own / "truthfulqa/mc_task.json") in message and f"${data.DATA_DIR_ENV}" in message
    assert "newBlanco/Modified_truthX@39e91d4" in message
    assert f"data pull truthfulqa-mc --data-dir {own}" in message
    assert not cache.exists()


def test_bring_your_own_data_is_named_with_where_to_put_it(cache, mirror):
    url, _ = mirror
    with pytest.raises(data.BringYourOwnError) as error:
        data.ensure_task_data("factor-news", mirror=url, progress=None)
    assert str(cache / "factor/news_factor.csv") in str(error.value)
    assert "AI21Labs/factor" in str(error.value) and "--data-dir" in str(error.value)

    with pytest.raises(data.BringYourOwnError) as error:  # the questions are pulled, the COCO images are not
        data.ensure_task_data("pope-random", mirror=url, progress=None)
    assert str(cache / "coco_val2014") in str(error.value) and "val2014.zip" in str(error.value)
    assert _sha256(cache / "pope/coco_pope_random.json") == FILES["pope/coco_pope_random.json"].sha256

    runner = CliRunner()
    task = runner.invoke(data_group, ["pull", "pope-random", "--mirror", url])
    assert task.exit_code == 1 and "bring your own" in task.output
    folder = runner.invoke(data_group, ["pull", "pope", "--mirror", url])
    assert folder.exit_code == 0, folder.output
    assert "2 file(s) downloaded, 1 already present" in folder.output and "coco_val2014" in folder.output


def test_cli_pull_fills_a_given_data_dir_and_list_shows_it(cache, mirror, tmp_path):
    url, _ = mirror
    runner = CliRunner()
    target = tmp_path / "offline-copy"
    pulled = runner.invoke(
        data_group, ["pull", "gsm8k", "adacad-nq-synth", "--data-dir", str(target), "--mirror", url]
    )
    assert pulled.exit_code == 0, pulled.output
    assert "gsm8k: 1 file(s) downloaded, 0 already present" in pulled.output
    assert (target / "gsm8k/test.jsonl").is_file() and (
        target / "adacad_nq_synth/nq_synth_2_-1.jsonl"
    ).is_file()
    assert not cache.exists()

    listed = runner.invoke(data_group, ["list", "--data-dir", str(target)])
    assert listed.exit_code == 0, listed.output
    blocks = {block.split(":", 1)[0]: block for block in listed.output.split("\n\n")[1:]}
    assert set(blocks) == {folder.name for folder in FOLDERS}
    gsm8k = blocks["gsm8k"]
    assert "tasks:   gsm8k" in gsm8k and "openai/grade-school-math@3101c7d" in gsm8k
    assert (
        "license: MIT" in gsm8k
        and "size:    749.7 kB in 1 file(s)" in gsm8k
        and "cached:  yes (1/1 files)" in gsm8k
    )
    assert "cached:  no" in blocks["truthfulqa"] and "truthfulqa-gen, truthfulqa-mc" in blocks["truthfulqa"]
    assert (
        "pope-mini" in blocks["chair"] and "derived: chair/coco2014_imid_to_objects.json" in blocks["chair"]
    )
    assert "bring your own (missing): coco_val2014/" in blocks["coco_val2014"]
    assert "pope-random" in blocks["coco_val2014"]

    default = runner.invoke(data_group, ["list"])
    assert default.exit_code == 0 and f"data root: {cache} (the cache)" in default.output


# --------------------------------------------------------------------------------------------- original sources


class CHAIR:  # pickled as __main__.CHAIR, like the cached evaluator of OPERA's chair.py
    pass


def _source_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A raw.githubusercontent.com-like tree (``<owner>/<repo>/<commit>/<path>``) built from ../shared/data:
    verbatim files as links, and for transformed files a source in the original's format."""
    tree = tmp_path / "sources"
    for entry in FILES.values():
        if entry.source is not None and entry.transform is None:
            link = tree / entry.source.repo / entry.source.commit / entry.source.path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(SHARED / entry.path)

    def source_path(relative: str) -> Path:
        source = FILES[relative].source
        assert source is not None
        path = tree / source.repo / source.commit / source.path
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    with zipfile.ZipFile(source_path("nq_swap/merged.jsonl"), "w", zipfile.ZIP_STORED) as archive:
        archive.write(SHARED / "nq_swap/merged.jsonl", "nqswap/merged.jsonl")
        archive.writestr("nqswap-upload-cli.py", "print('not this one')\n")

    for relative in ("open_ended_prompts/book_prompts.jsonl", "open_ended_prompts/wikitext_prompts.jsonl"):
        rows = [json.loads(line) for line in (SHARED / relative).read_text(encoding="utf-8").splitlines()]
        records = [
            {
                "prefix_text": r["prefix_text"],
                "reference_text": r["reference_text"],
                "generated_result": {"0": "..."},
            }
            for r in rows
        ]
        source_path(relative).write_text(json.dumps(records, indent=4), encoding="utf-8")

    objects = json.loads((SHARED / "chair/coco2014_imid_to_objects.json").read_text())
    vocab = json.loads((SHARED / "chair/chair_vocab.json").read_text())
    evaluator = CHAIR()
    evaluator.imid_to_objects = collections.defaultdict(
        list, {int(k): set(v) for k, v in reversed(objects.items())}
    )
    evaluator.coco_path = "data/"
    evaluator.__dict__.update(vocab)
    monkeypatch.setattr(CHAIR, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "CHAIR", CHAIR, raising=False)
    source_path("chair/coco2014_imid_to_objects.json").write_bytes(pickle.dumps(evaluator, protocol=4))
    return tree


@needs_shared
def test_pull_from_original_sources_reproduces_every_transformed_file(cache, tmp_path, monkeypatch):
    """zip member, chair.pkl (read without running code; ids re-sorted), result records, generated manifest."""
    tree = _source_tree(tmp_path, monkeypatch)
    messages: list[str] = []
    with serve(tree) as (url, requests):
        monkeypatch.setattr(data_sources, "GITHUB_RAW", url)
        for name in ("chair", "coco_images", "nq_swap", "open_ended_prompts"):
            data.pull(name, progress=messages.append)
    for relative in [entry.path for entry in FILES.values() if entry.transform is not None]:
        assert _sha256(cache / relative) == FILES[relative].sha256  # pull checked it too
    assert requests.count("/kekexu123/OPERA/6ebb17c825d53d6f351b1bce4442780ceeacb6c6/chair.pkl") == 1
    assert (
        "/CMU-Perceptual-Computing-Lab/openpose/5c5d96523ef917bd30301245fdc8343937cae48d/examples/media/COCO_val2014_000000000192.jpg"
        in requests
    )
    assert any("generated from chair/coco2014_imid_to_objects.json" in message for message in messages)
    assert not list(cache.rglob("*.part"))


def test_the_chair_pickle_is_read_without_running_code(cache, tmp_path, monkeypatch):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    tree = tmp_path / "sources"
    source = FILES["chair/chair_vocab.json"].source
    path = tree / source.repo / source.commit / source.path
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(Exploit()))
    with serve(tree) as (url, _):
        monkeypatch.setattr(data_sources, "GITHUB_RAW", url)
        with pytest.raises(data.DataError, match=r"chair/chair_vocab.json.*not allowed"):
            data.ensure_task_data(_FakeTask(), progress=None)
    assert not (tmp_path / "pwned").exists()
    assert _leftovers(cache / "chair") == []


class _FakeTask:
    name = "vocab-only"
    data_files = ("chair/chair_vocab.json",)


# --------------------------------------------------------------------------------------------- the table


@needs_shared
def test_the_table_covers_every_task_and_matches_the_shared_copies():
    from contrastive_decoding.benchmarks.tasks import TASKS

    for name, task_class in TASKS.items():
        if not task_class.__module__.startswith("contrastive_decoding."):
            continue  # tasks other tests register (tests/benchmarks/test_runner.py's tiny tasks)
        for relative in task_class.data_files:
            assert relative in FILES or relative in BRING_YOUR_OWN, (name, relative)
    shared = {
        path.relative_to(SHARED).as_posix()
        for path in SHARED.rglob("*")
        if path.is_file() and path.name not in ("PROVENANCE.md", "INDEX.md")
    }
    assert shared == set(FILES)
    for relative, entry in FILES.items():
        assert (SHARED / relative).stat().st_size == entry.size, relative
        assert _sha256(SHARED / relative) == entry.sha256, relative


@needs_shared
def test_every_source_is_the_one_its_provenance_names():
    for relative, entry in FILES.items():
        assert entry.transform is None or entry.transform in data.TRANSFORMS, relative
        for other in entry.inputs + entry.needs:
            assert other in FILES or other in BRING_YOUR_OWN, (relative, other)
        if entry.source is None:
            assert entry.transform is not None and entry.inputs, relative
            continue
        assert re.fullmatch(r"[0-9a-f]{40}", entry.source.commit), relative
        assert entry.source.url.startswith(
            f"https://raw.githubusercontent.com/{entry.source.repo}/{entry.source.commit}/"
        )
        provenance = (SHARED / relative.split("/", 1)[0] / "PROVENANCE.md").read_text(encoding="utf-8")
        assert entry.source.repo in provenance and entry.source.commit in provenance, relative
        source_path = Path(entry.source.path)
        named = (entry.source.path, source_path.name, f"{source_path.parent}/")  # openpose: examples/media/
        assert any(name in provenance for name in named), relative
        if entry.transform is not None:
            assert entry.note, relative
