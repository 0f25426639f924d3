"""The procedural multiple-choice questions: each answer letter checked against an independent
reading of the movie's own files (the SRT lines, the decoded video's pixels), and the oracle
captions against the rendered frames."""

import re

import numpy as np
import pytest

from jaxmm.data import expert_files, movies_mcq
from jaxmm.data import movies_synth as ms
from jaxmm.data.video import read_srt, read_video


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcq")
    return str(root), movies_mcq.write_dataset(str(root), n=2, seed=5, video=True)


def _chosen(q):
    return q["options"][ord(q["answer"]) - 65]


def _nearest(rgb, palette):
    return min(palette, key=lambda k: np.abs(np.asarray(palette[k]) - rgb).sum())


def test_answers_match_the_subtitles_and_pixels(data):
    root, records = data
    assert len(records) == 2 * len(movies_mcq.CATEGORIES)
    for q in records:
        assert len(q["options"]) == 4 and len(set(q["options"])) == 4
        lines = [s.text for s in read_srt(q["subtitles"])]
        scene = q["question"]
        if q["category"] == "giver":  # "<receiver>, I brought you the <obj>." then the giver
            obj, receiver = re.match(r"Who gives the (\w+) to (\w+)\?", scene).groups()
            i = lines.index(f"{receiver}, I brought you the {obj}.")
            assert lines[i + 1].startswith(f"Thank you, {_chosen(q)}.")
        elif q["category"] == "object":
            giver, receiver = re.match(r"What does (\w+) give to (\w+)\?", scene).groups()
            obj = _chosen(q).removeprefix("the ")
            i = lines.index(f"{receiver}, I brought you the {obj}.")
            assert lines[i + 1].startswith(f"Thank you, {giver}.")
        elif q["category"] == "place":
            receiver, obj = re.match(r"Where does (\w+) say .* take the (\w+)\?", scene).groups()
            assert any(ln.endswith(f"I will take the {obj} {_chosen(q)}.") for ln in lines), lines
        else:  # read the decoded video at the scene's quarter (figures apart, object held)
            k = ["first", "second", "third"].index(scene.split(" scene")[0].split()[-1])
            t = (k + 0.25) * ms.SCENE_S
            clip = read_video(q["video"], fps=1.0 / ms.SCENE_S, start_s=t, end_s=t + 0.2)
            frame = clip.frames[0].astype(int)
            if q["category"] == "background":
                assert _nearest(frame[2, 2], ms.BACKGROUNDS) == _chosen(q)
            else:  # the giver walks in from the left: the left figure's colour
                y = ms.HEIGHT // 2 + 8
                left = next(
                    x for x in range(ms.WIDTH // 2) if np.abs(frame[y, x] - frame[2, 2]).sum() > 60
                )
                assert _nearest(frame[y, left + 3], ms.COLOURS) == _chosen(q)


def test_oracle_captions_describe_the_frames(data):
    root, records = data
    vid = records[0]["video_id"]
    caps = expert_files.load_frame_captions(f"{root}/experts", vid, "Short_Natural")
    assert len(caps) == 6 and caps[0].time_s == pytest.approx(1.0)
    clip = read_video(records[0]["video"], fps=1.0, start_s=1.0, end_s=1.1)
    bg = _nearest(clip.frames[0][2, 2].astype(int), ms.BACKGROUNDS)
    assert caps[0].text.endswith(f"on a {bg} background.")
    assert len(expert_files.load_clip_captions(f"{root}/experts", vid)) == 3
