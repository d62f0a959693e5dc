"""ReVersion (Huang et al. 2023): Textual Inversion's one learned token, plus two things.

- Relation-steering contrastive learning: an InfoNCE term pulls the token's embedding toward a basis of words
  (positives: the paper's prepositions, or action verbs [ours]) and pushes it from the other words of the
  batch's descriptions (negatives), so the token takes the basis' part of speech rather than the exemplars'
  appearance.
- Relation-focal importance sampling: timesteps are drawn with density f(t) ∝ 1 - α cos(π t / T), more often
  at high noise, where the layout (the relation; here the action's pose) is decided.

Everything else is Textual Inversion's loop (`methods/textual_inversion.py`, through its `timestep_density`
and `extra_loss` hooks). Defaults and their sources: conf/method/reversion.yaml and docs/methods.md. The
artifact is Textual Inversion's `learned_embeds.safetensors` ({token: vector}, `pipe.load_textual_inversion`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from actionbench.errors import UserError, check_choice, check_positive, check_probability
from methods.mechanics.tokens import TokenVectors
from methods.textual_inversion import TextualInversion

# The paper's basis: English prepositions (the relation words its steering pulls toward) [paper, ref].
PREPOSITIONS = (
    "aboard about above across after against along alongside amid amidst among amongst anti around astride at "
    "atop before behind below beneath beside between beyond by down following from in including inside into near "
    "of off on onto opposite out outside over past regarding round through throughout to toward towards under "
    "underneath up upon versus with within"
).split()

# Our basis for actions [ours]: verbs of body movement in general, none of them naming a benchmark action
# (no saluting, pointing, kicking, squatting, waving, cheering, raising, standing), so the basis tells the token
# "a body motion" without telling it which one.
VERBS = (
    "bending stretching reaching turning rotating leaning stepping swinging extending lowering holding moving posing"
).split()

BASES = {"prepositions": PREPOSITIONS, "verbs": VERBS}

# Words that are never negatives: the reference's stop words (its templates/stop_words.py: NLTK's English
# stop-word list, 127 words), to which the prepositions and the basis' words are added, as its train.py does.
STOP_WORDS = (
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers "
    "herself it its itself they them their theirs themselves what which who whom this that these those am is are "
    "was were be been being have has had having do does did doing a an the and but if or because as until while "
    "of at by for with about against between into through during before after above below to from up down in out "
    "on off over under again further then once here there when where why how all any both each few more most "
    "other some such no nor not only own same so than too very s t can will just don should now"
).split()


def focal_timestep_density(num_train_timesteps: int, alpha: float) -> torch.Tensor:
    """Relation-focal importance sampling's f(t) = (1 - α cos(π t / T)) / T over t = 0 .. T-1, normalised to sum
    to 1: α = 0 is uniform; α > 0 favours high noise (large t), (1 + α) / (1 - α) times t = 0's weight at t = T."""
    t = torch.arange(num_train_timesteps, dtype=torch.float64)
    density = 1 - alpha * torch.cos(math.pi * t / num_train_timesteps)
    return density / density.sum()


def steering_loss(token: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-instance InfoNCE on cosine similarities: with s(x) = cos(token, x) / temperature,
    L = -log( Σ_p exp s(p) / (Σ_p exp s(p) + Σ_n exp s(n)) ). `token` (width,) or (1, width); `positives`
    (P, width) and `negatives` (N, width, N may be 0) are constants (no gradient reaches them)."""
    direction = F.normalize(token.reshape(1, -1).float(), dim=-1)
    basis = F.normalize(torch.cat([positives, negatives]).detach().float(), dim=-1)
    logits = (basis @ direction.T).squeeze(1) / temperature
    return torch.logsumexp(logits, 0) - torch.logsumexp(logits[: len(positives)], 0)


class ReVersion(TextualInversion):
    def __init__(
        self,
        basis: str | list[str] = "prepositions",
        num_positives: int = 4,
        temperature: float = 0.07,
        steer_loss_weight: float = 0.01,
        importance_sampling: bool = True,
        scaled_cosine_alpha: float = 0.5,
        initializer_token: str = "and",
        learning_rate: float = 2.5e-4,
        train_batch_size: int = 2,
        gradient_accumulation_steps: int = 4,
        max_train_steps: int = 3000,
        flip_p: float = 0.0,
        **textual_inversion,
    ):
        super().__init__(initializer_token=initializer_token, learning_rate=learning_rate, train_batch_size=train_batch_size,
                         gradient_accumulation_steps=gradient_accumulation_steps, max_train_steps=max_train_steps,
                         flip_p=flip_p, **textual_inversion)
        if isinstance(basis, str):
            check_choice("method.basis", basis, list(BASES), hint="or a list of words")
            words = BASES[basis]
        else:
            words = [str(w) for w in basis]
        if not words:
            raise UserError("method.basis: the positive words are an empty list")
        check_positive("method", num_positives=num_positives, temperature=temperature)
        check_probability("method", scaled_cosine_alpha=scaled_cosine_alpha)
        if steer_loss_weight < 0:
            raise UserError(f"method.steer_loss_weight={steer_loss_weight} must be >= 0")
        self.positive_words = words
        self.num_positives = min(num_positives, len(words))
        self.temperature = temperature
        self.steer_loss_weight = steer_loss_weight
        self.importance_sampling = importance_sampling
        self.alpha = scaled_cosine_alpha

    def timestep_density(self, scheduler) -> torch.Tensor | None:
        if not self.importance_sampling:
            return None
        return focal_timestep_density(scheduler.config.num_train_timesteps, self.alpha)

    def train(self, model, task, seed: int, artifact_dir: Path) -> None:
        self.prepare(model.pipe.tokenizer)
        super().train(model, task, seed, artifact_dir)

    def prepare(self, tokenizer) -> None:
        """The basis words' token ids, and the ids that are never negatives, in this tokenizer."""

        def pieces(word: str) -> list[int]:
            return tokenizer.encode(word, add_special_tokens=False)

        # each positive word as its token ids (a word the tokenizer splits brings all its pieces, as the reference)
        self._positive_ids = [torch.tensor(pieces(w)) for w in self.positive_words]
        never = {i for w in {*STOP_WORDS, *PREPOSITIONS, *self.positive_words} for i in pieces(w)}
        never |= set(tokenizer.all_special_ids) | {tokenizer.pad_token_id}  # SD 2.x pads with "!", not end-of-text
        self._not_negative = torch.tensor(sorted(never))

    def steering_sets(self, tokens: TokenVectors, input_ids: torch.Tensor, sampler: torch.Generator):
        """(positives, negatives) embeddings for one batch: for each of its prompts, `num_positives` basis words
        drawn without replacement; every other word of its prompts, repeats kept, as negatives."""
        table = tokens.table.detach()
        drawn = [torch.randperm(len(self._positive_ids), generator=sampler)[: self.num_positives] for _ in input_ids]
        positive_ids = torch.cat([self._positive_ids[i] for row in drawn for i in row.tolist()])
        excluded = torch.cat([self._not_negative, torch.tensor(tokens.token_ids)]).to(input_ids.device)
        negative_ids = input_ids[~torch.isin(input_ids, excluded)]
        return table[positive_ids.to(table.device)], table[negative_ids.to(table.device)]

    def extra_loss(self, tokens: TokenVectors, input_ids: torch.Tensor, sampler: torch.Generator) -> torch.Tensor | None:
        if self.steer_loss_weight == 0:
            return None
        positives, negatives = self.steering_sets(tokens, input_ids, sampler)
        return self.steer_loss_weight * steering_loss(tokens.vectors[0], positives, negatives, self.temperature)
