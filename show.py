"""
Text views of tokens and distributions, as sample.py --walkthrough prints them and the
notebooks show them.

    visible("\nAnd Nero ")               -> '⏎And·Nero·'
    candidates_table(logits, itos)        the most likely characters: logit and probability
    logprobs_table(chosen, logits, itos)  each chosen character's log-probability and the
                                          most likely alternatives, as the OpenAI API returns them
"""
import torch
import torch.nn.functional as F


def visible(text):
    """Make whitespace visible: newline -> '⏎', space -> '·'."""
    return text.replace("\n", "⏎").replace(" ", "·")


def top_ids(probs, n):
    """The ids of the n most likely tokens of probs (V,), most likely first; ties by lowest id."""
    return torch.argsort(probs, descending=True, stable=True)[:n]


def candidates_table(logits, itos, rows=6, drawn="{} of {} characters can be drawn"):
    """The most likely characters of logits (V,): character, logit, probability; `drawn` words
    how many can be drawn (another language, say)."""
    probs = F.softmax(logits, dim=-1)  # (V,)
    kept = int(torch.isfinite(logits).sum())
    lines = [f"      {'char':<6}{'logit':>8}{'prob':>8}    ({drawn.format(kept, logits.numel())})"]
    for i in top_ids(probs, rows).tolist():
        lines.append(f"      {visible(itos[i])!r:<6}{logits[i].item():>8.3f}{probs[i].item():>8.3f}")
    return "\n".join(lines)


def logprobs_table(chosen, logits, itos, top):
    """For each chosen character, its log-probability and the `top` most likely alternatives.

    chosen: (N,) ids; logits: (N, V), the distribution each was drawn from. Like the OpenAI
    API's logprobs: log p of the token, and top_logprobs."""
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (N, V)
    lines = [f"  {'#':>4}  {'char':<6}{'logprob':>9}" + (f"   the {top} most likely" if top else "")]
    for n, (i, row) in enumerate(zip(chosen.tolist(), log_probs), 1):
        others = "  ".join(f"{visible(itos[j])!r} {row[j].item():.3f}" for j in top_ids(row, top).tolist())
        lines.append(f"  {n:>4}  {visible(itos[i])!r:<6}{row[i].item():>9.3f}   {others}".rstrip())
    return "\n".join(lines)
