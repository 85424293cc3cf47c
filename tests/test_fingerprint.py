"""Image fingerprints are read once within one expansion of a recipe, and afresh outside it."""

from llava_ckd.fingerprint import images_fingerprint, images_read_once


def test_images_are_read_once_within_one_expansion_and_again_after_it(tmp_path):
    (tmp_path / "a.png").write_bytes(b"first")
    before = images_fingerprint(("a.png",), tmp_path)
    with images_read_once():
        first = images_fingerprint(("a.png",), tmp_path)
        (tmp_path / "a.png").write_bytes(b"changed, and longer")
        second = images_fingerprint(("a.png",), tmp_path)
        with images_read_once():  # nested: still the same instant
            nested = images_fingerprint(("a.png",), tmp_path)
    after = images_fingerprint(("a.png",), tmp_path)

    assert before == first == second == nested
    assert after != before and after["images"] == 1
