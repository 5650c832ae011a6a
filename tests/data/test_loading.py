"""Every accepted input format loads from every source kind and normalises to the internal form."""

import json

import pytest
from datasets import Dataset

from align.data import DataValidationError, load_preference_dataset, read_rows, write_jsonl

USER = {"role": "user", "content": "What is 7 times 8?"}
GOOD = {"role": "assistant", "content": "7 * 8 = 56."}
BAD = {"role": "assistant", "content": "7 * 8 = 54."}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_standard_pair_jsonl(tmp_path):
    rows = [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "id": 3}]
    ds = load_preference_dataset(write(tmp_path / "train.jsonl", rows))
    assert ds.column_names == ["prompt", "completions"]  # unknown columns ("id") are left out
    assert ds[0] == {"prompt": "The sky is", "completions": [" blue.", " green."]}


def test_conversational_pair_json_list_with_optional_columns(tmp_path):
    row = {
        "prompt": [USER],
        "chosen": [GOOD],
        "rejected": [BAD],
        "win_rates": [0.8, 0.3],
        "pair_prob": 0.7,
        "scores": [2, -1.5],
        "ref_chosen_logps": -12.5,
        "ref_rejected_logps": -14.0,
    }
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([row, row]))
    ds = load_preference_dataset(path, kind="pair")
    assert len(ds) == 2
    assert ds[0] == {
        "prompt": [USER],
        "completions": [[GOOD], [BAD]],
        "scores": [2.0, -1.5],
        "win_rates": [0.8, 0.3],
        "ref_logps": [-12.5, -14.0],
        "pair_prob": 0.7,
    }


def test_implicit_prompt_is_extracted_with_trl(tmp_path):
    rows = [{"chosen": [USER, GOOD], "rejected": [USER, BAD]}]
    ds = load_preference_dataset(write(tmp_path / "implicit.jsonl", rows))
    assert ds[0] == {"prompt": [USER], "completions": [[GOOD], [BAD]]}


def test_list_format_with_per_completion_fields(tmp_path):
    rows = [
        {
            "prompt": f"q{i}",
            "completions": ["a", "b", "c"],
            "returns": [1.0, 0.0, -1],
            "scores": [0.1, 0.2, 0.3],
            "labels": [1, 0, True],
            "win_rates": [0.5, 0.25, 1.0],
        }
        for i in range(3)
    ]
    ds = load_preference_dataset(write(tmp_path / "lists.jsonl", rows), kind="list")
    assert ds[2]["prompt"] == "q2" and ds[2]["completions"] == ["a", "b", "c"]
    assert ds[0]["returns"] == [1.0, 0.0, -1.0] and ds[0]["labels"] == [1.0, 0.0, 1.0]


def test_single_format_label(tmp_path):
    rows = [
        {"prompt": [USER], "completion": [GOOD], "label": True},
        {"prompt": [USER], "completion": [BAD], "label": False},
    ]
    ds = load_preference_dataset(write(tmp_path / "single.jsonl", rows), kind="single")
    assert ds[0] == {"prompt": [USER], "completions": [[GOOD]], "labels": [1.0]}
    assert ds[1]["labels"] == [0.0]


def test_parquet_file_and_folder_of_mixed_files(tmp_path):
    Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}] * 2).to_parquet(str(tmp_path / "1.parquet"))
    write(tmp_path / "2.jsonl", [{"prompt": "d", "chosen": "e", "rejected": "f"}])
    (tmp_path / "notes.txt").write_text("not data")
    assert load_preference_dataset(tmp_path / "1.parquet")["completions"] == [["b", "c"]] * 2
    assert load_preference_dataset(tmp_path)["prompt"] == ["a", "a", "d"]  # sorted files, .txt ignored


def test_folder_errors_name_the_file_holding_the_row(tmp_path):
    write(tmp_path / "a.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    write(
        tmp_path / "b.jsonl",
        [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "", "rejected": "c"}],
    )
    with pytest.raises(DataValidationError, match=r"b\.jsonl: row 1: field 'chosen': empty completion"):
        load_preference_dataset(tmp_path)


def test_in_memory_dataset_uses_given_name_in_errors():
    ds = Dataset.from_list(
        [{"prompt": "p", "completion": "c", "label": 1}, {"prompt": "p", "completion": " ", "label": 0}]
    )
    with pytest.raises(DataValidationError, match=r"^my-set: row 1: field 'completion': empty completion$"):
        load_preference_dataset(ds, name="my-set")
    assert load_preference_dataset(ds.select([0]))[0] == {"prompt": "p", "completions": ["c"], "labels": [1.0]}


def test_json_with_a_data_field_and_json_lines_saved_as_json(tmp_path):
    row = {"prompt": "a", "chosen": "b", "rejected": "c"}
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 1, "data": [row]}))
    (tmp_path / "lines.json").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    assert len(read_rows(tmp_path / "wrapped.json")[0][1]) == 1
    assert len(load_preference_dataset(tmp_path / "lines.json")) == 2


def test_invalid_json_line_and_missing_file(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(DataValidationError, match=r"broken\.jsonl: line 2: invalid JSON"):
        load_preference_dataset(tmp_path / "broken.jsonl")
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        load_preference_dataset(tmp_path / "absent.jsonl")


def test_non_utf8_jsonl_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}).encode()
    latin1 = '{"prompt": "caf\u00e9", "chosen": "b", "rejected": "c"}'.encode("latin-1")
    path.write_bytes(good + b"\n" + good + b"\n" + latin1)
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(path)
    offset = 2 * (len(good) + 1) + len('{"prompt": "caf')
    assert str(info.value) == (
        f"{path}: line 3: not UTF-8 text: byte 0xe9 at byte offset {offset} (byte 16 of the line): "
        "invalid continuation byte; save the file as UTF-8"
    )


def test_non_utf8_json_array_names_the_line_of_the_byte(tmp_path):
    path = tmp_path / "pairs.json"
    row = b'{"prompt": "a", "chosen": "b", "rejected": "c"}'
    path.write_bytes(b"[\n  " + row + b",\n  " + row.replace(b'"a"', b'"\xff"') + b"\n]")
    with pytest.raises(DataValidationError, match=rf"^{path}: line 3: not UTF-8 text: byte 0xff at byte offset 67 "):
        load_preference_dataset(path)


def test_utf8_with_a_byte_order_mark_loads(tmp_path):
    row = json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}).encode()
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + row)
    assert load_preference_dataset(tmp_path / "bom.jsonl")["prompt"] == ["a"]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + row + b"\n" + row.replace(b'"b"', b'"\xe9"'))
    offset = 3 + len(row) + 1 + len('{"prompt": "a", "chosen": "')
    with pytest.raises(DataValidationError, match=rf"line 2: not UTF-8 text: byte 0xe9 at byte offset {offset} "):
        load_preference_dataset(tmp_path / "bom.jsonl")


def test_broken_json_array_names_the_line(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text('[\n  {"prompt": "a", "chosen": "b", "rejected": "c"},\n  {"prompt": "a" "chosen": "b"}\n]')
    with pytest.raises(DataValidationError, match=rf"^{path}: line 3: invalid JSON: Expecting ',' delimiter$"):
        load_preference_dataset(path)


def test_a_file_that_is_not_parquet_names_the_file(tmp_path):
    path = tmp_path / "pairs.parquet"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    with pytest.raises(DataValidationError, match=rf"^{path}: not a readable Parquet file: "):
        load_preference_dataset(path)
    with pytest.raises(DataValidationError, match=r"pairs\.parquet: not a readable Parquet file"):
        load_preference_dataset(tmp_path)  # the folder: the bad file is named


@pytest.mark.parametrize(
    ("rows", "kind", "found"),
    [
        ([{"prompt": "p", "chosen": "a", "rejected": "b"}], "list", "pair"),
        ([{"prompt": "p", "completion": "a", "label": 1}], "pair", "single"),
        ([{"prompt": "p", "completions": ["a", "b"]}], "single", "list"),
    ],
)
def test_wrong_kind_for_the_objective_fails_clearly(tmp_path, rows, kind, found):
    path = write(tmp_path / "data.jsonl", rows)
    with pytest.raises(
        DataValidationError, match=rf"data\.jsonl: the objective needs a '{kind}' dataset .* is a '{found}'"
    ):
        load_preference_dataset(path, kind=kind)


def test_unknown_kind_argument():
    with pytest.raises(ValueError, match="kind must be one of"):
        load_preference_dataset(Dataset.from_list([{"prompt": "p", "completion": "c"}]), kind="pairs")


def test_write_jsonl_is_atomic_and_round_trips(tmp_path):
    rows = [{"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}]
    path = write_jsonl(rows, tmp_path / "sub" / "out.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind

    def bad_rows():
        yield rows[0]
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(bad_rows(), path)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows  # old file intact
    assert list(path.parent.iterdir()) == [path]


# Rows with images: values of every form, relative paths from the data file's folder, fingerprints over the files.
VQA = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which clips?"}]}]


def picture(colour: str):
    from PIL import Image

    return Image.new("RGB", (20, 16), colour)


def png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def vqa_pair(image, chosen_image=None) -> dict:
    row = {"prompt": VQA, "images": [image], "chosen": [GOOD], "rejected": [BAD]}
    return row if chosen_image is None else {**row, "chosen": [GOOD, USER, GOOD], "chosen_images": [chosen_image]}


def test_relative_image_paths_are_read_from_the_data_files_folder(tmp_path, monkeypatch):
    (tmp_path / "data" / "img").mkdir(parents=True)
    picture("red").save(tmp_path / "data" / "img" / "a.png")
    path = write(tmp_path / "data" / "train.jsonl", [vqa_pair("img/a.png")])
    monkeypatch.chdir(tmp_path)  # not the folder of the file
    for source in (path, "data/train.jsonl", tmp_path / "data"):
        ds = load_preference_dataset(source)
        assert ds[0]["images"] == [{"bytes": None, "path": str(tmp_path / "data" / "img" / "a.png")}]


def test_paths_bytes_pil_and_image_dicts_load_to_the_same_pixels(tmp_path):
    """Paths stay paths; bytes and PIL images (stored by datasets as its Image feature) become PNG bytes."""
    import numpy as np

    from align.data.images import load_image

    red = picture("red")
    red.save(tmp_path / "red.png")
    values = [str(tmp_path / "red.png"), {"bytes": None, "path": str(tmp_path / "red.png")}, png(red),
              {"bytes": png(red), "path": "red.png"}]  # fmt: skip
    path = write(tmp_path / "paths.jsonl", [vqa_pair(v) for v in values[:2]])
    # an in-memory dataset (one form per column, as Arrow stores it); datasets encodes PIL images itself
    sources = [path, *(Dataset.from_list([vqa_pair(v)]) for v in (*values[2:], red))]
    refs = [row["images"][0] for source in sources for row in load_preference_dataset(source)]
    assert [ref["bytes"] is None for ref in refs] == [True, True, False, False, False]
    assert refs[3]["path"] == "red.png"  # a name next to the bytes is kept as it is
    for ref in refs:
        assert np.array_equal(np.asarray(load_image(ref)), np.asarray(red))


def test_fingerprint_covers_image_files_and_text_rows_keep_theirs(tmp_path):
    import os

    from datasets import DatasetInfo

    picture("red").save(tmp_path / "a.png")
    path = write(tmp_path / "train.jsonl", [vqa_pair("a.png")])
    first, again = load_preference_dataset(path)._fingerprint, load_preference_dataset(path)._fingerprint
    picture("blue").save(tmp_path / "a.png")  # the same path, other pixels
    os.utime(tmp_path / "a.png", ns=(1, 1))
    assert again == first != load_preference_dataset(path)._fingerprint

    text = [{"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}]
    ds = load_preference_dataset(write(tmp_path / "text.jsonl", text))
    rows = [{"prompt": [USER], "completions": [[GOOD], [BAD]]}]
    assert ds._fingerprint == Dataset.from_list(rows, info=DatasetInfo(description=ds.info.description))._fingerprint
