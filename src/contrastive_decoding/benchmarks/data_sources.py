"""Where every benchmark data file comes from: source repository @ commit, path, license, sha256, size.

One :class:`DataFolder` per folder of the data root (the layout the tasks' ``data_files`` name, e.g.
``truthfulqa/mc_task.json``). Each :class:`DataFile` is fetched from its original public source, pinned to a
commit, and checked against the sha256 of the file the tasks read. Where the bytes are not a verbatim copy of
the source file, ``transform`` names what the pull does to them (unzip a member, read a pickle, keep some
fields), and ``sha256`` is that of the result. :class:`BringYourOwn` entries are what no original source
serves in a checkable form: the user puts them at ``DATA_DIR/<path>``.

This module is plain data (no imports beyond the standard library); ``benchmarks/data.py`` does the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

GITHUB_RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class Source:
    """A file in a public GitHub repository at a fixed commit."""

    repo: str  # owner/name
    commit: str  # 40 hex digits
    path: str  # inside the repository

    @property
    def url(self) -> str:
        return f"{GITHUB_RAW}/{self.repo}/{self.commit}/{quote(self.path)}"

    @property
    def short(self) -> str:
        """``owner/name@commit7``, as ``data list`` prints it."""
        return f"{self.repo}@{self.commit[:7]}"


@dataclass(frozen=True)
class DataFile:
    """One file of the data root and how to get it.

    ``transform`` is ``None`` for a verbatim copy of ``source``; otherwise the name of a function in
    ``data.TRANSFORMS`` that turns the downloaded source (``None`` for a file generated from ``inputs`` alone)
    into this file, with ``transform_arg`` as its argument. ``inputs`` are data files the transform reads
    (pulled first); ``needs`` are files that must sit next to this one for it to be usable (a manifest's
    images). With a mirror, every file is fetched as is and only ``needs`` are followed.
    """

    path: str  # relative to the data root
    sha256: str
    size: int
    source: Source | None
    transform: str | None = None
    transform_arg: str = ""
    inputs: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    note: str = ""  # what the transform does, for `data list` and error messages


@dataclass(frozen=True)
class BringYourOwn:
    """A file or folder (``path`` ending in ``/``) that the user provides at ``DATA_DIR/<path>``."""

    path: str
    what: str
    how: str  # where to get it

    @property
    def is_folder(self) -> bool:
        return self.path.endswith("/")


@dataclass(frozen=True)
class DataFolder:
    name: str
    description: str
    license: str
    files: tuple[DataFile, ...] = ()
    bring_your_own: tuple[BringYourOwn, ...] = ()
    note: str = ""  # e.g. "vendored copy of sylinrl/TruthfulQA"


# --------------------------------------------------------------------------------------------- the table

_TRUTHFULQA = "newBlanco/Modified_truthX", "39e91d49c5b26bdef976da70be6c12829739e83e"
_MEMOTRAP = "liujch1998/memo-trap", "d87b26abf4402b76d167d1326798d21d7ea2127e"
_POPE = "RUCAIBox/POPE", "3df3ba1b110ecce25696989577fad583b67d4239"
_CHAIR_SYNONYMS = "LisaAnne/Hallucination", "6e4d33c4bedf6dfcd24c61bf527f40714717be47"
_CHAIR_CACHE = Source("kekexu123/OPERA", "6ebb17c825d53d6f351b1bce4442780ceeacb6c6", "chair.pkl")
_OPENPOSE = "CMU-Perceptual-Computing-Lab/openpose", "5c5d96523ef917bd30301245fdc8343937cae48d"
_CAD = "xhan77/context-aware-decoding", "1281d7fcd0e7e49d786c78d3170a3048dd9f6dc2"
_OPEN_ENDED = (
    "yxuansu/Contrastive_Search_versus_Contrastive_Decoding",
    "bdca42ddae6e3109b4b4eca1d6dd6b2dc5b05c2d",
)

COCO_IMAGE_FOLDER = (
    "coco_val2014"  # POPE's images: DATA_DIR/coco_val2014/COCO_val2014_*.jpg (tasks/vision.py)
)

# COCO val2014 image id -> (sha256, size) of the 20 images in openpose's examples/media
_COCO_SAMPLE_IMAGES: dict[int, tuple[str, int]] = {
    192: ("146520b06866c3b199697a6525a3d3d86cd6a5a99d175d7fc887319fafd7b62c", 230425),
    241: ("39df957040ee07907626207f3f80ae92e599b7b871034b1c4d677eda06a8bf1a", 107714),
    257: ("bb57fedcdbb1b4fa25302ba03bf9eb4a68464ea0be5234f3f78367f512892e6d", 208764),
    294: ("b92e3be3906b865498c8fdbcc139d3c04e90c6d889197434e4ed79c70b0eb17f", 75635),
    328: ("fae67f47646606b5223f29db83ad5ccc4374e4015c8152defa7476c7f33ee74b", 159712),
    338: ("e1ab2ec78f9f84c5971ac6021213a9ec6a9360b6fb1d3216f09850c8d053144f", 81713),
    357: ("ea2f67b99f654ffd8527bf47e878e30d53790977220e503419d1ce3d5b540b97", 131457),
    360: ("a53abc1a1c0170490a9ad8d34a4548f49dae72f96852ea97748359e29ec8eb2f", 118630),
    395: ("ca09f5e2d747e2bcbed917fe688793d9996f457ac1e4150d7726259e299bbb3a", 246526),
    415: ("018bcbe9298485075ba53142a3822a5676cc7be7e09018d9e54c8eaeffcfa85b", 118150),
    428: ("1d8008508f0afb271d84b13ce0da7fd440047d400bf3612c5c151143438ed8ee", 102365),
    459: ("7fc910824a20229b4649e3dc47950cda468a96839ae827bf8edd9e3cc374cdc5", 194898),
    474: ("f13d726313942b23739ab85cb52082a8644778b995062ef808418fe45015188a", 131485),
    488: ("6129892cc173dca328479720f5be9746fee658a91ca346ad94fa4ba25f9d3615", 105570),
    536: ("f80c7e1eff918925bc6a2f327ab1bb0e2e9d3b7396aad1cbbbd942a9fdb7757d", 22611),
    544: ("0f333d9dcd7e6ce64dcfa07b9b3ce567d0ae71b2a8a546718e27290d37d47972", 188065),
    564: ("348688b9f1aa993fd97cca5d863fcdf5e36bc8dc37b3c36ea21a2f4cd20858e7", 130509),
    569: ("3075006d2d5f04b108483df95bdee9ef6dcbc92ccb6059f4b80f40dfda5f7f51", 129689),
    589: ("269cc4e54c2889e38b9f7d8f15cf360447326d48cbd091db6bf5a27e8b13ed84", 96802),
    623: ("c6b543632d9fcd7c8eda0f1238802406f085e6239b50fa2ecbe028bd7fa2b67c", 112452),
}


def coco_image_name(image_id: int) -> str:
    return f"COCO_val2014_{image_id:012d}.jpg"


_COCO_SAMPLE_FILES = tuple(
    DataFile(
        f"coco_images/images/{coco_image_name(image_id)}",
        sha256,
        size,
        Source(*_OPENPOSE, f"examples/media/{coco_image_name(image_id)}"),
    )
    for image_id, (sha256, size) in sorted(_COCO_SAMPLE_IMAGES.items())
)

FOLDERS: tuple[DataFolder, ...] = (
    DataFolder(
        "truthfulqa",
        "TruthfulQA generation CSV + MC targets (mc1/mc2); v0/ = the original 2021 release (817 questions each)",
        "Apache-2.0",
        note="vendored copy of sylinrl/TruthfulQA, its 10-10-2021 state",
        files=(
            DataFile(
                "truthfulqa/TruthfulQA.csv",
                "f9bd9e859cc102cb1f647f1064da7e009be752c416845cf9fa56e6eaae403a7d",
                476230,
                Source(*_TRUTHFULQA, "TruthfulQA/TruthfulQA.csv"),
            ),
            DataFile(
                "truthfulqa/mc_task.json",
                "b3799639bc76c939836d587de7d30b48d91012cb34be04806d33106ce06c162a",
                755456,
                Source(*_TRUTHFULQA, "TruthfulQA/data/mc_task.json"),
            ),
            DataFile(
                "truthfulqa/v0/TruthfulQA.csv",
                "8d7dd15f033196140f032d97d30f037da7a7b1192c3f36f9937c1850925335a2",
                443723,
                Source(*_TRUTHFULQA, "TruthfulQA/data/v0/TruthfulQA.csv"),
            ),
            DataFile(
                "truthfulqa/v0/mc_task.json",
                "6eb4125d25750c0145c4be2dce00440736684ab6f74ce6bff2139571cc758954",
                710607,
                Source(*_TRUTHFULQA, "TruthfulQA/data/v0/mc_task.json"),
            ),
        ),
    ),
    DataFolder(
        "factor",
        "FACTOR expert split (236 rows); news and wiki are not downloadable here",
        "MIT",
        files=(
            DataFile(
                "factor/expert_factor.csv",
                "39cbceba9b43e713069a155e2028f6a2335b792983110b935a71ddb065766bde",
                477485,
                Source(
                    "AI21Labs/factor", "ee9de30abf28e94b163167dc41ad51fbbdb48c32", "data/expert_factor.csv"
                ),
            ),
        ),
        bring_your_own=(
            BringYourOwn(
                "factor/news_factor.csv",
                "the FACTOR news split, held out from this package's data",
                "data/news_factor.csv of github.com/AI21Labs/factor",
            ),
            BringYourOwn(
                "factor/wiki_factor.csv",
                "the FACTOR wiki split (2994 rows), no checked copy known",
                "data/wiki_factor.csv of github.com/AI21Labs/factor",
            ),
        ),
    ),
    DataFolder(
        "pope",
        "POPE COCO random / popular / adversarial yes-no questions (3 x 3000, JSON Lines despite .json)",
        "MIT",
        files=tuple(
            DataFile(
                f"pope/coco_pope_{split}.json",
                sha256,
                size,
                Source(*_POPE, f"output/coco/coco_pope_{split}.json"),
                needs=(f"{COCO_IMAGE_FOLDER}/",),
            )
            for split, sha256, size in (
                ("random", "ac25245170b975a5bdf9080b23fd431dfe6be458bc038259c1f4f09a6bef7994", 368166),
                ("popular", "72c1a8ad45d0c13514f5f22598261df41d3b533854d29682e924db50ed8aa753", 370190),
                ("adversarial", "420b3407db1fa9f1187a805dca41cb7b97fd91504e6c2179706188c107fb8ef8", 370401),
            )
        ),
    ),
    DataFolder(
        COCO_IMAGE_FOLDER,
        "MSCOCO val2014 images, for full POPE (6 GB, not downloaded by this package)",
        "COCO images: Flickr terms; annotations CC BY 4.0",
        bring_your_own=(
            BringYourOwn(
                f"{COCO_IMAGE_FOLDER}/",
                "the MSCOCO val2014 images (COCO_val2014_*.jpg) that POPE asks about",
                "images.cocodataset.org/zips/val2014.zip: unzip it and move or link its val2014/ folder there",
            ),
        ),
    ),
    DataFolder(
        "chair",
        "CHAIR synonym list (80 lines) + ground-truth objects of all 123,287 COCO-2014 images + vocab tables",
        "synonyms: BSD-2-Clause; ground truth: MIT (OPERA) over COCO annotations (CC BY 4.0)",
        files=(
            DataFile(
                "chair/synonyms.txt",
                "b685537b36fe21b791c87151b96a991ceb582edff19f3da204dcc7a7905502f2",
                3577,
                Source(*_CHAIR_SYNONYMS, "data/synonyms.txt"),
            ),
            DataFile(
                "chair/coco2014_imid_to_objects.json",
                "21f9955ce487e55cff309abab463be023a1d83d18765f0aa731326c8f37e4f54",
                5033002,
                _CHAIR_CACHE,
                transform="chair_pickle",
                transform_arg="imid_to_objects",
                note="read from the cached CHAIR evaluator chair.pkl (a restricted unpickler: no code runs); "
                'written as compact JSON {"<image id>": [sorted objects]} in image-id order',
            ),
            DataFile(
                "chair/chair_vocab.json",
                "d439420c9f4e684d84ac188abe695e9263e0877962da88b1259421a307bae9f5",
                16012,
                _CHAIR_CACHE,
                transform="chair_pickle",
                transform_arg="vocab",
                note="mscoco_objects, inverse_synonym_dict, double_word_dict of chair.pkl, as JSON (indent 1)",
            ),
        ),
    ),
    DataFolder(
        "coco_images",
        "20 MSCOCO val2014 JPEGs (~2.7 MB) + manifest.json with each image's CHAIR ground-truth objects",
        "COCO/Flickr image terms; the hosting repo (openpose) is non-commercial research only",
        files=(
            *_COCO_SAMPLE_FILES,
            DataFile(
                "coco_images/manifest.json",
                "e2e5af838ca2e132ba7c8c2f3c65b54e7f9e8e2299a0d5373c449103fe7c8842",
                3708,
                None,
                transform="coco_manifest",
                inputs=("chair/coco2014_imid_to_objects.json",),
                needs=tuple(file.path for file in _COCO_SAMPLE_FILES),
                note="generated: the images' CHAIR ground truth looked up in chair/coco2014_imid_to_objects.json",
            ),
        ),
    ),
    DataFolder(
        "nq_swap",
        "NQ-Swap knowledge-conflict QA (4746 rows; the file behind HF pminervini/NQ-Swap)",
        "unstated (host repo MIT; NQ CC BY-SA 3.0)",
        files=(
            DataFile(
                "nq_swap/merged.jsonl",
                "72571fea1a20e8f1ec7d8e2b30d974815a8fac39ee616c8501bc659be2802edb",
                10398545,
                Source(
                    "kushalc/nd-lora",
                    "ef0bf6514452674d9cdc373825293e533712483b",
                    "leaderboard/cli/xiaotang/nqswap.zip",
                ),
                transform="unzip",
                transform_arg="nqswap/merged.jsonl",
                note="the member nqswap/merged.jsonl of nqswap.zip, unzipped",
            ),
        ),
    ),
    DataFolder(
        "memotrap",
        "MemoTrap, 4 subtasks (860 / 843 / 100 / 736 rows; 3-hate-speech-ending.csv has offensive content)",
        "MIT",
        files=tuple(
            DataFile(f"memotrap/{name}.csv", sha256, size, Source(*_MEMOTRAP, f"data/{name}.csv"))
            for name, sha256, size in (
                (
                    "1-proverb-ending",
                    "e6d1b4e6ec6bc90c22afb9138bafbdf276fbe252be705d44ff16fdb44d50bae7",
                    95161,
                ),
                (
                    "2-proverb-translation",
                    "2f78d1d18d80d839a36eaaa0143f7aacb73a827c2422d21a7ddf0c60400d5033",
                    155972,
                ),
                (
                    "3-hate-speech-ending",
                    "e9d020f85703f62fc56643f1fd5f3cae7deffaa6860017f8f4be278a7e09a36e",
                    22509,
                ),
                (
                    "4-history-of-science-qa",
                    "32144d7411aff7558ac8c64ba676e407e3e2931dea03f4154a521b373f5f962b",
                    243707,
                ),
            )
        ),
    ),
    DataFolder(
        "adacad_nq_synth",
        "AdaCAD synthetic NQ conflict set, CAD two-stream format (1000 examples, 2000 lines)",
        "MIT",
        files=(
            DataFile(
                "adacad_nq_synth/nq_synth_2_-1.jsonl",
                "26b41e874ab2d5baa44a5e538ea668f29e292e920f593a84366df9530bc8b656",
                1143628,
                Source(
                    "HanNight/AdaCAD", "d4519ec84b0308ac6f5a10a5540f5e6a045eb6bd", "data/nq_synth_2_-1.jsonl"
                ),
            ),
        ),
    ),
    DataFolder(
        "cad_cnndm",
        "CNN/DM summarization subset used by CAD (300 articles x 2 streams per file)",
        "unstated (articles: CNN/DailyMail)",
        files=(
            DataFile(
                "cad_cnndm/cnndm_1_0.jsonl",
                "d3b35491f33241cf1b94ee8b7707ad724f4541f69b4bb9e3fa89a248265bc8ea",
                2822615,
                Source(*_CAD, "eval/cnndm_example_input/cnndm_1_0.jsonl"),
            ),
            DataFile(
                "cad_cnndm/cnndm_1.5_-0.5.jsonl",
                "f7f17f2df4c26a5ae5aaf4c01bd695a69aecf71a6e9d10debafc201c97960de5",
                2824115,
                Source(*_CAD, "eval/cnndm_example_input/cnndm_1.5_-0.5.jsonl"),
            ),
        ),
    ),
    DataFolder(
        "open_ended_prompts",
        "Contrastive-decoding open-ended prompts + human continuations: book (1947), wikitext (1314)",
        "MIT (host); text from BookCorpus / WikiText-103",
        files=tuple(
            DataFile(
                f"open_ended_prompts/{domain}_prompts.jsonl",
                sha256,
                size,
                Source(
                    *_OPEN_ENDED,
                    f"inference_results/gpt2-xl/{domain}/{domain}_contrastive_k_{k}_alpha_0.6_result.json",
                ),
                transform="prompt_records",
                note='kept prefix_text and reference_text of each result record (dropped generated_result), added "id"; '
                "JSON Lines",
            )
            for domain, k, sha256, size in (
                ("book", 6, "c663865ebf3e63336416ccac974d78efbb0ca2413b64e52f9df1fadfe098f752", 2006779),
                ("wikitext", 5, "839cf47c70a0d0a1d15b2c69c9439dea14eae5ec0b757d2294b2684d3035c724", 1439959),
            )
        ),
    ),
    DataFolder(
        "gsm8k",
        "GSM8K test split (1319 rows)",
        "MIT",
        files=(
            DataFile(
                "gsm8k/test.jsonl",
                "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
                749738,
                Source(
                    "openai/grade-school-math",
                    "3101c7d5072418e28b9008a6636bde82a006892c",
                    "grade_school_math/data/test.jsonl",
                ),
            ),
        ),
    ),
    DataFolder(
        "strategyqa",
        "StrategyQA train split (2290 questions), used by DoLa",
        "MIT (StrategyQA release)",
        bring_your_own=(
            BringYourOwn(
                "strategyqa/strategyqa_train.json",
                "the StrategyQA training set (a JSON list of {qid, question, answer, ...})",
                "strategyqa_train.json of https://storage.googleapis.com/ai2i/strategyqa/data/strategyqa_dataset.zip",
            ),
        ),
    ),
    DataFolder(
        "halueval",
        "HaluEval QA (10000 rows, JSON Lines despite .json)",
        "MIT",
        files=(
            DataFile(
                "halueval/qa_data.json",
                "89ed139ec5e3a3169a0b30e45569ac1283846f76f27f7bb5e908ee6deed57e88",
                6164420,
                Source("RUCAIBox/HaluEval", "b7253db3cdaa0ab2c382f92b26b390109174f77e", "data/qa_data.json"),
            ),
        ),
    ),
)

FOLDERS_BY_NAME: dict[str, DataFolder] = {folder.name: folder for folder in FOLDERS}
FILES: dict[str, DataFile] = {file.path: file for folder in FOLDERS for file in folder.files}
BRING_YOUR_OWN: dict[str, BringYourOwn] = {
    entry.path: entry for folder in FOLDERS for entry in folder.bring_your_own
}
