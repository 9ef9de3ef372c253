"""tools/ilsvrc_val_layout.py: the flat validation folder into class folders, from a label file."""

from ifnd.data.index import scan_folder


def test_val_folder_laid_out_from_labels(tmp_path, load_tool):
    tool = load_tool("ilsvrc_val_layout")
    val = tmp_path / "val"
    val.mkdir()
    for i in (1, 2, 3):
        (val / f"ILSVRC2012_val_0000000{i}.JPEG").write_bytes(b"x")
    labels = tmp_path / "labels.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG n02\nILSVRC2012_val_00000002.JPEG n01\n"
                      "ILSVRC2012_val_00000003.JPEG n02\n")
    (tmp_path / "train" / "n01").mkdir(parents=True)
    assert tool.main(["--val", str(val), "--labels", str(labels), "--train", str(tmp_path / "train")]) == 2  # n02
    assert tool.main(["--val", str(val), "--labels", str(labels), "--out", str(tmp_path / "links")]) == 0
    assert (tmp_path / "links" / "n02" / "ILSVRC2012_val_00000003.JPEG").is_symlink()
    assert tool.main(["--val", str(val), "--labels", str(labels)]) == 0
    index = scan_folder(str(val))
    assert index.classes == ("n01", "n02") and index.labels.tolist() == [0, 1, 1]
    kaggle = tmp_path / "LOC_val_solution.csv"
    kaggle.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n02 1 2 3 4 n02 5 6 7 8\n")
    assert tool.read_labels(kaggle, None, []) == {"ILSVRC2012_val_00000001.JPEG": "n02"}
