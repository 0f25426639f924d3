"""Multiple-choice questions about the procedural movies, with known answers and known sources.

Built on `jaxmm.data.movies_synth` (the movies, their subtitles and video) for MEXA-style
expert aggregation: each question says which modality holds its answer, so a run can show
whether the router picked the right expert.

  * subtitles: who gives the object (`giver`), what is given (`object`), where the receiver
    will take it (`place`): the SRT lines name the receiver, then the giver, object and place;
  * video: the colour of the figure that hands over the object in a scene (`giver_colour`),
    the background of a scene (`background`): only the frames (or captions of them) show it.

Also writes *precomputed captions* in MEXA's expert-file layout (`jaxmm.data.expert_files`):
clip captions (one per scene) and two keyframe captions per scene (detailed and short). They
are written from the generator's ground truth (what `render_frame` draws), so they are oracle
captions, not a model's: use them to test aggregation, not captioning.

    python -m jaxmm.data.movies_mcq --out runs/mexa/data --n 10 --seed 0
"""

from __future__ import annotations

import argparse
import os
import random
import string

from jaxmm.data import expert_files
from jaxmm.data import movies_synth as ms
from jaxmm.io.jsonl import write_jsonl

TASK_TYPE = "movie_qa"
CATEGORIES = {  # category -> where the answer can be read
    "giver": "subtitles",
    "object": "subtitles",
    "place": "subtitles",
    "giver_colour": "video",
    "background": "video",
}
_ORDINAL = ("first", "second", "third", "fourth", "fifth")


def _options(correct: str, distractors: list[str], pool: list[str], rng: random.Random, k: int):
    """`k` shuffled options: the correct one, the given distractors, then others from `pool`."""
    opts = [correct] + [d for d in dict.fromkeys(distractors) if d != correct]
    opts += rng.sample([p for p in pool if p not in opts], max(k - len(opts), 0))
    opts = opts[:k]
    rng.shuffle(opts)
    return opts, string.ascii_uppercase[opts.index(correct)]


def questions(movie: ms.Movie, rng: random.Random, num_options: int = 4) -> list[dict]:
    """One question per category for a random scene; options and answer letter seeded."""
    names = list(movie.colours)
    out = []
    s_i = rng.randrange(len(movie.scenes))
    s = movie.scenes[s_i]
    ordinal = _ORDINAL[s_i]
    rows = [
        ("giver", f"Who gives the {s.obj} to {s.receiver}?", s.giver,
         [n for n in names if n != s.giver], list(ms.NAMES)),
        ("object", f"What does {s.giver} give to {s.receiver}?", f"the {s.obj}",
         [f"the {x.obj}" for x in movie.scenes], [f"the {o}" for o in ms.OBJECTS]),
        ("place", f"Where does {s.receiver} say they will take the {s.obj}?", f"to the {s.place}",
         [f"to the {x.place}" for x in movie.scenes], [f"to the {p}" for p in ms.PLACES]),
        ("giver_colour",
         f"In the {ordinal} scene, what colour is the figure that hands over the object?",
         movie.colours[s.giver], [movie.colours[s.receiver]], list(ms.COLOURS)),
        ("background", f"What colour is the background in the {ordinal} scene?", s.background,
         [], list(ms.BACKGROUNDS) + ["white"]),
    ]  # fmt: skip
    for category, question, correct, distractors, pool in rows:
        options, answer = _options(correct, distractors, pool, rng, num_options)
        out.append(
            {
                "id": f"{movie.movie_id}-{category}",
                "movie_id": movie.movie_id,
                "task_type": TASK_TYPE,
                "question": question,
                "options": options,
                "answer": answer,
                "category": category,
                "evidence": CATEGORIES[category],
            }
        )
    return out


def clip_captions(movie: ms.Movie) -> list[str]:
    """One caption per scene (clip length `SCENE_S`): what the frames show, colours only."""
    out = []
    for s in movie.scenes:
        cg, cr = movie.colours[s.giver], movie.colours[s.receiver]
        out.append(
            f"On a {s.background} background, a {cg} figure walks in from the left and a {cr} "
            f"figure from the right; they meet and the {cg} figure hands a small white object "
            f"to the {cr} figure."
        )
    return out


def keyframe_captions(movie: ms.Movie) -> list[tuple[float, dict[str, str]]]:
    """Two keyframes per scene (at 25% and 75%): detailed and short captions of the frame."""
    frames = []
    for i, s in enumerate(movie.scenes):
        for u in (0.25, 0.75):
            t = (i + u) * ms.SCENE_S
            holder = movie.colours[ms.object_holder(movie, t)]
            left, right = movie.colours[s.giver], movie.colours[s.receiver]
            detailed = (
                f"A {left} rectangular figure stands on the left and a {right} figure on the "
                f"right, on a plain {s.background} background. A small white square is above "
                f"the {holder} figure."
            )
            short = f"{left} and {right} figures on a {s.background} background."
            frames.append((t, {"Detailed_Natural": detailed, "Short_Natural": short}))
    return frames


def write_dataset(
    root: str, n: int = 10, seed: int = 0, video: bool = True, num_options: int = 4
) -> list[dict]:
    """Movies (`movies_synth.write_movie`), oracle captions under `<root>/experts`, and
    `<root>/questions.jsonl` (records for the `mexa` pipeline, file paths absolute)."""
    rng = random.Random(seed)
    records = []
    experts = os.path.abspath(os.path.join(root, "experts"))
    for k in range(n):
        movie = ms.make_movie(f"movie{k:03d}", rng)
        ms.write_movie(root, movie, video=video)
        expert_files.write_clip_captions(experts, movie.movie_id, clip_captions(movie))
        expert_files.write_frame_captions(experts, movie.movie_id, keyframe_captions(movie))
        srt = os.path.abspath(os.path.join(root, "subtitles", f"{movie.movie_id}.srt"))
        for q in questions(movie, rng, num_options):
            q |= {"video_id": movie.movie_id, "subtitles": srt, "expert_dir": experts}
            if video:
                q["video"] = os.path.abspath(os.path.join(root, "videos", f"{movie.movie_id}.mp4"))
            records.append(q)
    write_jsonl(os.path.join(root, "questions.jsonl"), records)
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no_video", action="store_true")
    args = ap.parse_args()
    records = write_dataset(args.out, args.n, args.seed, video=not args.no_video)
    print(f"wrote {len(records)} questions about {args.n} movies to {args.out}")


if __name__ == "__main__":
    main()
