"""shared.textdata: the label<TAB>text reader against hand-written files."""

import pytest

from shared.textdata import read_labelled


def test_read_labelled_hand_file(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("1\tgood  film \n0\tbad\tfilm\n\n5\twhat is a   nebula ?\n")
    texts, labels = read_labelled(p)
    assert texts == ["good film", "bad film", "what is a nebula ?"]
    assert labels.tolist() == [1, 0, 5] and labels.dtype.name == "int64"


@pytest.mark.parametrize("bad", ["no tab here\n", "x\ttext\n"])
def test_read_labelled_names_the_bad_line(tmp_path, bad):
    p = tmp_path / "d.txt"
    p.write_text("1\tfine\n" + bad)
    with pytest.raises(ValueError, match=r"d.txt:2: expected 'label<TAB>text'"):
        read_labelled(p)
