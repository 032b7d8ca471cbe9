"""Check: random ops in an inference graph (hand-written training-mode dropout above all).

A random op makes every run of the deployed model different: no parity check can verify it, and
when it is the hand-written dropout idiom (``x * (rand_like(x) > p).float() / (1 - p)``, written
by users whose compiler rejects ``Dropout``), the model was exported in training mode by mistake.
This is about the model, not about ATC, so the severities are not in the ATC data table.
"""

from __future__ import annotations

from surgery.doctor.context import Context
from surgery.doctor.finding import Finding, Severity
from surgery.idioms import RANDOM_OPS, match_dropout_idiom

NAME = "random"


def check_random_ops(ctx: Context) -> list[Finding]:
    """Random ops; those that start a hand-written dropout will fail the deployment (fix: remove-dropout)."""
    idioms, other = [], []
    for entry in ctx.nodes(*sorted(RANDOM_OPS)):
        idiom = match_dropout_idiom(entry.node)
        if idiom is not None and idiom.scale_matches:
            idioms.append(entry.label)
        else:
            other.append(entry.label)
    findings = []
    if idioms:
        findings.append(
            Finding(
                check=NAME,
                severity=Severity.WILL_FAIL,
                title=f"{len(idioms)} hand-written training-mode dropout(s): the model is random",
                nodes=idioms,
                why="A random op → compare → Cast → Mul (→ rescale by 1/(1-p)) chain is dropout written by hand "
                "(x * (torch.rand_like(x) > p).float() / (1 - p)) and exported in training mode: every run of the "
                "deployed model masks different elements, and its outputs cannot be verified.",
                fix=["remove-dropout"],
                fix_note="remove-dropout replaces the chain by its input (eval semantics) and says so in its notes",
                source="ONNX operator semantics",
                details={"kind": "dropout-idiom"},
            )
        )
    if other:
        findings.append(
            Finding(
                check=NAME,
                severity=Severity.PRECISION_RISK,
                title=f"{len(other)} random op(s) in an inference graph",
                nodes=other,
                why="Random ops (RandomUniform/RandomNormal(Like), Bernoulli, Multinomial) give different outputs on "
                "every run: parity against the original cannot be checked, and a deployed model is rarely meant to "
                "be random.",
                fix=[],
                fix_note="no pass removes a random op that is not dropout; if it is noise only training needs, "
                "export the model in eval mode",
                source="ONNX operator semantics",
                details={"kind": "random"},
            )
        )
    return findings
