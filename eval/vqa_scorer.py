"""VQAScore as a judge (Lin et al. 2024): a vision-language model is asked ActionBench's two questions about each
image as yes/no questions, and P(yes) is its probability of answering "Yes" (actionbench/vlm.py says how).

- action_p_yes: P(yes) for 'Does this figure show "{action}"? Please answer yes or no.' (the action's
  description, e.g. "saluting"; `action_text` may name the subject too);
- subject_p_yes: the same for the subject's prompt ("a dog");
- action_correct / subject_correct: P(yes) >= `threshold` (0.5: the model leans to yes). Where people's votes
  exist, the leaderboard reports the threshold that would have matched them best, without changing these.

Unlike CLIP's zero-shot verdicts it reads the question as a sentence rather than a bag of words, and it judges
each image on its own, not against the benchmark's other actions and subjects.
"""

from __future__ import annotations

from actionbench.errors import UserError, check_probability
from actionbench.vlm import VisionLanguageModel
from eval.scorer import Scorer

QUESTION = 'Does this figure show "{text}"? Please answer yes or no.'  # VQAScore's own template
P_YES = "softmax of the next-token logits over the whole vocabulary, at the answer's token"


class VQAScorer(Scorer):
    def __init__(
        self,
        model: str,
        revision: str | None = None,
        dtype: str = "auto",
        batch_size: int = 8,
        threshold: float = 0.5,
        question: str = QUESTION,
        answer: str = "Yes",
        action_text: str = "{action}",
        subject_text: str = "{subject}",
        key: str = "scorer",
        seed: int = 0,
    ):
        """`model`: a hub id, a local folder, or `tiny` (random weights: measure nothing); `key`: this scorer's
        config entry, for messages (`scorer.vqascore` inside a scorer set)."""
        check_probability(key, threshold=threshold)
        for name, template, field in (("question", question, "text"), ("action_text", action_text, "action"),
                                      ("subject_text", subject_text, "subject")):
            if "{" + field + "}" not in template:
                raise UserError(f"{key}.{name}={template!r} must contain {{{field}}}")
        self.vlm = VisionLanguageModel(model, revision, dtype, key=f"{key}.model", seed=seed)
        self.batch_size, self.threshold, self.answer = batch_size, threshold, answer
        self.question, self.action_text, self.subject_text = question, action_text, subject_text

    @property
    def measures_nothing(self) -> bool:
        return self.vlm.random_weights

    def describe(self) -> dict:
        info = {"kind": "vqascore", **self.vlm.describe(), "threshold": self.threshold, "question": self.question,
                "answer": self.answer, "action_text": self.action_text, "subject_text": self.subject_text,
                "p_yes": P_YES}
        if self.measures_nothing:
            info["note"] = "random-weight scorer: these scores exercise the code and measure nothing"
        return info

    def check(self, task=None) -> None:
        """Find the model and its processor, and the answer's token, before any expensive work."""
        self.vlm.check()
        self.vlm.answer_token(self.answer)

    def questions(self, task, subjects: list[str]) -> tuple[list[str], list[str]]:
        """The action question and the subject question for images asked to show `subjects` (names)."""
        prompts = {s.name: s.prompt for s in task.subjects}
        action = [self.question.format(text=self.action_text.format(action=task.action.description, subject=prompts[s]))
                  for s in subjects]
        subject = [self.question.format(text=self.subject_text.format(subject=prompts[s])) for s in subjects]
        return action, subject

    def verdicts(self, task, images, subjects, device) -> list[dict]:
        action, subject = self.questions(task, subjects)
        p_yes = self.vlm.p_yes([*images, *images], [*action, *subject], self.answer, device, self.batch_size)
        rows = []
        for action_p, subject_p in zip(p_yes[:len(images)], p_yes[len(images):]):
            rows.append({"action_correct": action_p >= self.threshold, "subject_correct": subject_p >= self.threshold,
                         "action_p_yes": action_p, "subject_p_yes": subject_p})
        return rows
