"""What the `mean` target does to pronoun agreement: the teacher's margin on each agreement prompt, on its
role-reversed twin, and on the `mean` target that combines the two (lam 0.5), per kind of subject.

    python scripts/agreement_targets.py [--cache .cache/fairdistill] [--lam 0.5] [--names word_lists/names.tsv]

For a prompt x whose subject the swapper reverses ("My aunt said that" -> "My uncle said that"), the twin's
teacher prediction, exchanged back (she <-> he, her <-> his), agrees with x's, and `mean` keeps the margin. For a
subject the word lists do not cover (a first name outside names.tsv, "Keiko said that"), the twin is x itself,
its exchanged prediction is x's mirror image, and the `mean` target at lam 0.5 has margin exactly 0 where the
context decides the gender: training on it teaches the student to ignore that evidence. Prints one row per kind.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.core.config import TeacherConfig  # noqa: E402
from distill.counterfactual.swap import Swapper  # noqa: E402
from distill.counterfactual.wordlists import load_lexicon  # noqa: E402
from distill.evaluation.metrics.pronoun_agreement import FORMS, GENDERS, KINDS, load_prompts  # noqa: E402
from distill.models.lm import encode_prompt, last_token_logprobs, pad_token_id  # noqa: E402
from distill.models.loading import load_pretrained, load_tokenizer, resolve_teacher_path  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=".cache/fairdistill", help="where the embedded teacher is converted")
    ap.add_argument("--teacher", default="embedded:smollm2-135m")
    ap.add_argument("--lam", type=float, default=0.5, help="the `mean` weight of x's own prediction")
    ap.add_argument("--names", default="word_lists/names.tsv", help="the first-name pairs the swapper uses")
    a = ap.parse_args()
    path = resolve_teacher_path(TeacherConfig(name_or_path=a.teacher), a.cache)
    tok = load_tokenizer(path)
    model = load_pretrained(path, "teacher", torch.float32).eval()
    swapper = Swapper(load_lexicon(names=a.names), use_names=True)
    prompts = load_prompts()
    twins = [swapper.swap(p.text) for p in prompts]

    def logps(texts):
        enc = [encode_prompt(tok, t) for t in texts]
        return torch.cat(list(last_token_logprobs(model, enc, pad_token_id(tok), torch.device("cpu"), 64)))

    own, twin = logps([p.text for p in prompts]), logps(twins)
    rows: dict[str, list[tuple[float, float, float, bool]]] = {k: [] for k in KINDS}
    for i, p in enumerate(prompts):
        fem, mal = (tok(f, add_special_tokens=False)["input_ids"][0] for f in FORMS[p.case])
        right, wrong = (fem, mal) if p.gender == GENDERS[0] else (mal, fem)
        m_own = float(own[i, right] - own[i, wrong])
        m_twin = float(twin[i, wrong] - twin[i, right])  # the twin's prediction exchanged back onto x
        mix = [
            math.log(a.lam * math.exp(float(own[i, t])) + (1 - a.lam) * math.exp(float(twin[i, s])))
            for t, s in ((right, wrong), (wrong, right))
        ]
        rows[p.kind].append((m_own, m_twin, mix[0] - mix[1], twins[i] == p.text))
    sys.stdout.write(
        "| kind | prompts | twin = x (subject not swapped) | teacher margin on x | exchanged twin's | "
        f"`mean` target's (lam {a.lam:g}) | `mean` target agrees |\n|---|---|---|---|---|---|---|\n"
    )
    for kind, r in rows.items():
        n = len(r)
        same = sum(x[3] for x in r)
        mean = [sum(x[j] for x in r) / n for j in range(3)]
        agree = 100.0 * sum(x[2] > 0 for x in r) / n
        sys.stdout.write(
            f"| {kind} | {n} | {same} | {mean[0]:.2f} | {mean[1]:.2f} | {mean[2]:.2f} | {agree:.0f}% |\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
