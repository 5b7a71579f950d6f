"""Contact sheets: evenly spaced tiles, cut-aware tiles (shot → white cut → shot), labels and bad cuts."""

import cv2
import numpy as np
import pytest

from omnidirector_jax.cli import main
from omnidirector_jax.media import SHEET_GAP, contact_sheet, write_frames

H, W = 40, 64  # tiles are not resized (W < tile_width), so their pixels are the frames' own
WHITE = (255, 255, 255)


def colour(i: int) -> tuple[int, int, int]:
    """A distinct, never white colour for frame i."""
    return (20 + i % 200, 90 + i // 200, 200 - i % 200)


def make_frames(num: int, cuts=()) -> np.ndarray:
    frames = np.empty((num, H, W, 3), np.uint8)
    for i in range(num):
        frames[i] = WHITE if i in cuts else colour(i)
    return frames


def tiles(sheet: np.ndarray, th: int = H, tw: int = W) -> list[np.ndarray]:
    """Cut a sheet back into its tiles, row by row, by its geometry; empty trailing cells are dropped."""
    rows = (sheet.shape[0] - SHEET_GAP) // (th + SHEET_GAP)
    cols = (sheet.shape[1] - SHEET_GAP) // (tw + SHEET_GAP)
    assert sheet.shape == (rows * (th + SHEET_GAP) + SHEET_GAP, cols * (tw + SHEET_GAP) + SHEET_GAP, 3)
    out = []
    for r in range(rows):
        for c in range(cols):
            y, x = SHEET_GAP + r * (th + SHEET_GAP), SHEET_GAP + c * (tw + SHEET_GAP)
            tile = sheet[y:y + th, x:x + tw]
            if not (tile == 40).all():  # the sheet's background: an empty cell
                out.append(tile)
    return out


def shown(sheet: np.ndarray, num: int, th: int = H, tw: int = W) -> list:
    """Frame index of each tile, read from its pixels away from the label ('cut' for white tiles)."""
    lookup = {colour(i): i for i in range(num)} | {WHITE: "cut"}
    result = []
    for tile in tiles(sheet, th, tw):
        patch = tile[th // 2:, tw // 3:].reshape(-1, 3)
        assert (patch == patch[0]).all(), "a tile's body must be one flat frame colour"
        result.append(lookup[tuple(int(v) for v in patch[0])])
    return result


def cut_neighbours(frames_shown: list) -> list[tuple]:
    return [(frames_shown[n - 1], frames_shown[n + 1]) for n, f in enumerate(frames_shown) if f == "cut"]


def test_no_cuts_gives_evenly_spaced_tiles():
    frames = make_frames(60)
    sheet = contact_sheet(frames)
    assert shown(sheet, 60) == np.unique(np.linspace(0, 59, 28).round().astype(int)).tolist()
    assert sheet.shape[1] == 7 * (W + SHEET_GAP) + SHEET_GAP  # 7 columns


def test_even_sampling_misses_the_cuts_that_cut_aware_sampling_shows():
    even = set(np.linspace(0, 499, 28).round().astype(int).tolist())
    cuts = [c for c in range(5, 500, 10) if c not in even]  # white cut frames, none on the even grid
    assert len(cuts) > 40
    frames = make_frames(500, cuts)
    assert "cut" not in shown(contact_sheet(frames), 500)
    got = shown(contact_sheet(frames, cuts=cuts), 500)
    assert len(got) == 27 and got.count("cut") == 9  # 9 triples fit in 28 tiles
    pairs = cut_neighbours(got)
    assert all(after - before == 2 and before + 1 in cuts for before, after in pairs)
    assert pairs[0] == (4, 6) and pairs[-1] == (494, 496)  # evenly chosen: the first and last cut included
    assert got == [x for b, a in pairs for x in (b, "cut", a)]


def test_few_cuts_are_all_shown_with_neighbours_and_fill():
    cuts = [10, 45]
    frames = make_frames(60, cuts)
    got = shown(contact_sheet(frames, cuts=cuts), 60)
    assert len(got) == 28 and got.count("cut") == 2
    assert cut_neighbours(got) == [(9, 11), (44, 46)]
    indices = [f for f in got if f != "cut"]
    assert indices == sorted(indices)  # chronological


def test_cut_triples_line_up_in_rows():
    cuts = list(range(5, 500, 10))
    sheet = contact_sheet(make_frames(500, cuts), cuts=cuts)
    assert sheet.shape[1] == 6 * (W + SHEET_GAP) + SHEET_GAP  # 7 columns rounded down to 6
    got = shown(sheet, 500)
    assert got[1::3] == ["cut"] * 9


def test_cuts_at_the_ends_and_resized_tiles():
    cuts = [0, 59]
    frames = make_frames(60, cuts)
    got = shown(contact_sheet(frames, cuts=cuts), 60)
    assert got[0] == "cut" and got[1] == 1 and got[-1] == "cut" and got[-2] == 58
    small = contact_sheet(frames, cuts=cuts, tile_width=32, labels=False)
    assert len(tiles(small, 20, 32)) == 28
    assert (tiles(small, 20, 32)[0] == 255).all()


@pytest.mark.parametrize("fill", [0, 255])
def test_labels_show_on_black_and_white(fill):
    frames = np.full((3, H, W, 3), fill, np.uint8)
    tile = tiles(contact_sheet(frames), H, W)[0]
    label = tile[:16, :24]
    assert (label < 60).any() and ((label > 200) & (label < 255)).any()  # dark text on a light box
    assert (tiles(contact_sheet(frames, labels=False), H, W)[0] == fill).all()


@pytest.mark.parametrize("cuts, message", [
    ([60], r"in \[0, 60\)"), ([-1], r"in \[0, 60\)"), ([30, 10], "sorted and unique"), ([10, 10], "sorted"),
    ([1.5], "integer"), ("ab", "integer"),
])
def test_bad_cuts_are_a_clear_value_error(tmp_path, cuts, message):
    frames = make_frames(60)
    with pytest.raises(ValueError, match=message):
        contact_sheet(frames, cuts=cuts)
    for ext in ("png", "mp4", "npz"):
        with pytest.raises(ValueError, match=message):
            write_frames(tmp_path / f"x.{ext}", frames, cuts=cuts)
        assert not (tmp_path / f"x.{ext}").exists()


def test_write_frames_png_is_the_cut_aware_sheet(tmp_path):
    cuts = [10, 45]
    frames = make_frames(60, cuts)
    path = write_frames(tmp_path / "sheet.png", frames, cuts=cuts)
    image = cv2.imread(str(path))[..., ::-1]
    np.testing.assert_array_equal(image, contact_sheet(frames, cuts=cuts))


def test_render_grid_png_shows_the_trajectory_cuts(tmp_path):
    out = tmp_path / "grid.png"  # three_shots: 49 frames, cuts at 16 and 33 (rendered white)
    assert main(["render-grid", "data/trajectories/three_shots.json", "--out", str(out), "--size", "48x80"]) == 0
    sheet = cv2.imread(str(out))[..., ::-1]
    body = [t[24:, 26:] for t in tiles(sheet, 48, 80)]
    white = [n for n, b in enumerate(body) if (b == 255).all()]
    assert len(body) == 28 and len(white) == 2
    assert all(not (body[n - 1] == 255).all() and not (body[n + 1] == 255).all() for n in white)
