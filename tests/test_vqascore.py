"""VQAScore on a tiny random Qwen2.5-VL built in code: the questions, P(yes) against a hand computation from the
logits, batching, loading from a folder, clear errors, and records, sidecars and the board's per-judge columns."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from judge_fixtures import make_sweep
from PIL import Image

from actionbench import leaderboard
from actionbench.errors import UserError
from actionbench.run import run
from actionbench.vlm import VisionLanguageModel, tiny_model, tiny_processor
from actionbench.votes import DB_FILE, answer, connect
from eval.aggregate import agreement
from eval.vqa_scorer import VQAScorer

CPU = torch.device("cpu")


def pictures(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny():
    scorer = VQAScorer("tiny")
    scorer.check()
    return scorer


def test_questions_are_vqascores_template_about_the_action_and_the_subject(tiny, mini_task):
    action, subject = tiny.questions(mini_task, ["dog", "man"])
    assert action == ['Does this figure show "saluting"? Please answer yes or no.'] * 2
    assert subject == ['Does this figure show "a dog"? Please answer yes or no.',
                       'Does this figure show "a man"? Please answer yes or no.']
    both = VQAScorer("tiny", action_text="{subject} {action}").questions(mini_task, ["dog"])[0]
    assert both == ['Does this figure show "a dog saluting"? Please answer yes or no.']
    prompt = tiny.vlm.prompts(subject[:1])[0]
    assert prompt.endswith(f"{subject[0]}<|im_end|>\n<|im_start|>assistant\n") and "<|image_pad|>" in prompt


def test_p_yes_is_the_softmax_over_the_whole_vocabulary_at_the_answers_token(tiny):
    image, question = pictures(1)[0], 'Does this figure show "saluting"? Please answer yes or no.'
    processor, model = tiny.vlm.processor, tiny.vlm.load(CPU)
    inputs = processor(images=[image], text=tiny.vlm.prompts([question]), return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1].double().tolist()  # the full sequence's last position, by hand
    yes = processor.tokenizer.convert_tokens_to_ids("Yes")
    by_hand = math.exp(logits[yes]) / sum(math.exp(v) for v in logits)
    assert tiny.vlm.p_yes([image], [question], "Yes", CPU) == [pytest.approx(by_hand, rel=1e-5)]
    no = tiny.vlm.p_yes([image], [question], "No", CPU)[0]
    assert no == pytest.approx(math.exp(logits[processor.tokenizer.convert_tokens_to_ids("No")]) / sum(map(math.exp, logits)),
                               rel=1e-5)


# Two other chat templates' forms over the tiny tokenizer. Idefics3 / SmolVLM's: capitalised roles, the assistant's
# turn rendered "Assistant: <answer>" while the generation prompt ends in "Assistant:" with no space. Gemma 3's: the
# template renders the BOS itself, before a tokenizer that also adds one by default.
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ 'model' if message['role'] == 'assistant' else "
    "message['role'] }}\n{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>model\n{% endif %}")


def tiny_with_template(template: str, bos: bool = False) -> VisionLanguageModel:
    """The tiny model behind another chat template; `bos`: its tokenizer adds a BOS of its own, as Gemma 3's does."""
    from tokenizers import processors

    processor = tiny_processor()
    processor.chat_template = template
    if bos:
        tokenizer = processor.tokenizer
        tokenizer.add_special_tokens({"bos_token": "<bos>"})
        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tokenizer.bos_token_id)])
    vlm = VisionLanguageModel("tiny")
    vlm._processor = processor
    return vlm


@pytest.mark.parametrize("template, bos, answered",
                         [(None, False, "Yes"), (IDEFICS3_TEMPLATE, False, "ĠYes"), (GEMMA3_TEMPLATE, True, "Yes")],
                         ids=["qwen", "idefics3", "gemma3"])
def test_p_yes_reads_the_answers_token_as_it_follows_the_prompt_with_one_bos(template, bos, answered):
    """Qwen's template is answered "Yes"; Idefics3's prompt ends in `Assistant:` and is answered " Yes" (another
    token); Gemma 3's renders its BOS, and the prompt reaches the model with that one BOS, not a second."""
    vlm = tiny_with_template(template, bos) if template else VisionLanguageModel("tiny")
    tokenizer = vlm.processor.tokenizer
    assert vlm.answer_token("Yes") == tokenizer.convert_tokens_to_ids(answered) != tokenizer.unk_token_id
    image, question = pictures(1)[0], 'Does this figure show "saluting"? Please answer yes or no.'
    prompts = vlm.prompts([question])
    by_hand = vlm.processor(images=[image], text=prompts, add_special_tokens=False, return_tensors="pt")
    if bos:
        twice = vlm.processor(images=[image], text=prompts, return_tensors="pt").input_ids[0].tolist()
        assert twice[:2] == [tokenizer.bos_token_id] * 2, "the tokenizer would add a second BOS"
        assert by_hand.input_ids[0].tolist().count(tokenizer.bos_token_id) == 1
    with torch.no_grad():
        logits = vlm.load(CPU)(**by_hand).logits[0, -1].double().softmax(-1)
    expected = logits[tokenizer.convert_tokens_to_ids(answered)].item()
    assert vlm.p_yes([image], [question], "Yes", CPU) == [pytest.approx(expected, rel=1e-5)]


def test_batches_give_what_one_image_at_a_time_gives_and_verdicts_follow_the_threshold(mini_task):
    images, subjects = pictures(5), ["dog", "man", "dog", "chef", "man"]
    one = VQAScorer("tiny", batch_size=1).verdicts(mini_task, images, subjects, CPU)
    batched = VQAScorer("tiny", batch_size=4).verdicts(mini_task, images, subjects, CPU)
    for a, b in zip(one, batched):
        assert (a["action_p_yes"], a["subject_p_yes"]) == pytest.approx((b["action_p_yes"], b["subject_p_yes"]), rel=1e-5)
    scores = sorted(r["subject_p_yes"] for r in one)
    assert len(set(scores)) == 5, "the tiny model's answers depend on the image and the question"
    middle = (scores[2] + scores[3]) / 2
    cut = VQAScorer("tiny", threshold=middle).verdicts(mini_task, images, subjects, CPU)
    assert [r["subject_correct"] for r in cut] == [r["subject_p_yes"] >= middle for r in one]
    assert sum(r["subject_correct"] for r in cut) == 2
    assert not any(r["action_correct"] for r in one), "at 0.5 the random model never says yes"


def test_a_local_folder_loads_through_the_auto_classes_and_answers_as_the_model_saved(tmp_path, mini_task):
    processor = tiny_processor()
    tiny_model(processor.tokenizer, seed=3).save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    images, subjects = pictures(3), ["dog", "man", "chef"]
    from_folder = VQAScorer(str(tmp_path / "vlm"))
    from_folder.check()
    assert type(from_folder.vlm.load(CPU)).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert from_folder.verdicts(mini_task, images, subjects, CPU) == pytest.approx(
        VQAScorer("tiny", seed=3).verdicts(mini_task, images, subjects, CPU))
    assert from_folder.describe()["model"] == str(tmp_path / "vlm") and "note" not in from_folder.describe()


def test_bad_models_and_settings_fail_with_one_message_naming_them(tmp_path):
    with pytest.raises(UserError, match="'nobody/no-such-vlm'.*could not be found"):
        VQAScorer("nobody/no-such-vlm").check()  # the hub is offline in tests: neither cached nor reachable
    with pytest.raises(UserError, match="no such folder"):
        VQAScorer(str(tmp_path / "absent")).check()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        VQAScorer(str(tmp_path / "empty")).check()
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match="'bert' model, not one that AutoModelForImageTextToText loads"):
        VQAScorer(str(tmp_path / "bert")).check()
    with pytest.raises(UserError, match=r"scorer.answer='Yes please' is \d+ tokens"):
        VQAScorer("tiny", answer="Yes please").check()
    with pytest.raises(UserError, match=r"scorer.threshold=1.5"):
        VQAScorer("tiny", threshold=1.5)
    with pytest.raises(UserError, match=r"scorer.question=.*must contain \{text\}"):
        VQAScorer("tiny", question="Is it there?")
    with pytest.raises(UserError, match="scorer.dtype='fp8'"):
        VQAScorer("tiny", dtype="fp8")


def test_a_missing_model_stops_the_run_before_anything_is_drawn(mini_root, tmp_path):
    cfg = compose_config(["method=sd", "suite=actionbench", "model=tiny", f"benchmark.root={mini_root}",
                          f"output_dir={tmp_path}", "scorer=tiny_clip_vqascore", "scorer.vqascore.model=nobody/no-such-vlm"])
    with pytest.raises(UserError, match="scorer.vqascore.model='nobody/no-such-vlm'"):
        run(cfg)
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize("scorer", ["tiny_vqascore", "tiny_clip_vqascore"])
def test_runs_keep_p_yes_in_the_record_and_each_images_sidecar(scorer, mini_root, tmp_path):
    cfg = compose_config(["method=sd", "suite=actionbench", "model=tiny", f"benchmark.root={mini_root}", "samples_per_subject=1",
                          f"output_dir={tmp_path}", f"scorer={scorer}"])
    run(cfg)
    record = json.loads((tmp_path / "record.json").read_text())
    prefix = "vqascore." if scorer == "tiny_clip_vqascore" else ""
    for row in record["images"]:
        sidecar = json.loads((tmp_path / row["file"]).with_suffix(".json").read_text())
        assert sidecar["scores"] == {k: v for k, v in row.items() if k not in ("file", "subject", "category", "sample", "prompt",
                                                                              "noise_seed")}
        assert 0 < row[f"{prefix}action_p_yes"] < 1 and 0 < row[f"{prefix}subject_p_yes"] < 1
        assert row[f"{prefix}action_correct"] == (row[f"{prefix}action_p_yes"] >= 0.5)
    figures = record["aggregates"]["beside"]["vqascore"] if prefix else record["aggregates"]
    assert figures["subject_p_yes"] == pytest.approx(np.mean([r[f"{prefix}subject_p_yes"] for r in record["images"]]))
    vqascore = record["scorer"]["vqascore"] if prefix else record["scorer"]
    assert vqascore["kind"] == "vqascore" and vqascore["question"] == 'Does this figure show "{text}"? Please answer yes or no.'
    assert "measure nothing" in record["scorer"]["note"]
    if prefix:
        assert "clip.action_correct" not in record["images"][0] and "image_subject_cosine" in record["images"][0]


def test_best_threshold_is_the_best_of_every_possible_cut():
    rng = np.random.default_rng(1)
    for _ in range(20):
        scores = rng.choice([0.1, 0.2, 0.35, 0.5, 0.8, 0.9], size=15)
        people = rng.random(15) < scores  # people say yes more often where the score is high
        threshold, agree = leaderboard.best_threshold(scores, people)
        brute = max(100 * np.mean((scores >= t) == people) for t in np.linspace(0, 1, 201))
        assert agree == pytest.approx(brute) == pytest.approx(100 * np.mean((scores >= threshold) == people))
    assert leaderboard.best_threshold(np.array([0.1, 0.2, 0.7, 0.9]), np.array([False, True, True, True])) == pytest.approx((0.15, 100.0))
    assert leaderboard.best_threshold(np.array([0.1, 0.2]), np.array([False, False])) == pytest.approx((0.6, 100.0)), "all no"
    assert leaderboard.best_threshold(np.array([0.1, 0.2]), np.array([True, True])) == (0.0, 100.0), "all yes"


def _with_vqascore(images):
    """Give every record of the sweep a VQAScore beside its headline: P(yes) from the image's index, verdicts at 0.5."""
    for run_dir in {row["run_dir"] for row in images.values()}:
        path = Path(run_dir) / "record.json"
        record = json.loads(path.read_text())
        for i, row in enumerate(record["images"]):
            p_action, p_subject = (0.15 + 0.25 * i) % 1, (0.9 - 0.3 * i) % 1
            row.update({"vqascore.action_correct": p_action >= 0.5, "vqascore.subject_correct": p_subject >= 0.5,
                        "vqascore.action_p_yes": p_action, "vqascore.subject_p_yes": p_subject})
        path.write_text(json.dumps(record))
        by_file = {row["file"]: row for row in record["images"]}
        for image in images.values():
            if image["run_dir"] == run_dir:
                image.update(by_file[image["file"]])


def test_the_board_gives_each_judge_its_agreement_with_people_and_the_best_threshold(tmp_path):
    images = make_sweep(tmp_path)
    _with_vqascore(images)
    db = connect(tmp_path / DB_FILE)
    # people, in an order that does not hang on tmp_path (image keys hold digests of the run's folder): the action
    # on the first image of three (chef: both judges say yes; on dog only the headline does), the subject on every
    # other image, so the two judges' agreement with people differs on every path
    ordered = sorted(images.values(), key=lambda r: (r["method"], r["action"], r["file"]))
    people = {(r["method"], r["file"], r["action"]): (i % 3 == 0, i % 2 == 0) for i, r in enumerate(ordered)}
    for row in ordered:
        answer(db, "r1", row["digest"], row["file"], *people[(row["method"], row["file"], row["action"])], 1)
    db.close()
    _, board, _, _ = leaderboard.build(tmp_path, resamples=20)
    for method, row in board.set_index("method").iterrows():
        mine = [(images[k], people[(images[k]["method"], images[k]["file"], images[k]["action"])])
                for k in images if images[k]["method"] == method]
        for question, index in (("Action", 0), ("Subject", 1)):
            for column, suffix in ((f"{question.lower()}_correct", ""), (f"vqascore.{question.lower()}_correct", "_VQASCORE")):
                expected = agreement([r[column] for r, _ in mine], [v[index] for _, v in mine])
                assert row[f"Agree_{question}{suffix}"] == pytest.approx(expected[0], abs=1e-3)
                assert row[f"Kappa_{question}{suffix}"] == pytest.approx(expected[1], abs=1e-3, nan_ok=True)
        assert row["VQASCORE_Action"] == pytest.approx(100 * np.mean([r["vqascore.action_correct"] for r, _ in mine]), abs=1e-3)
    assert row["Agree_Action_VQASCORE"] != row["Agree_Action"], "the fixture's two judges differ"
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=20"])
    markdown = (tmp_path / "LEADERBOARD.md").read_text()
    assert "Kappa_Subject_VQASCORE" in markdown and "VQASCORE_Total" in markdown and "best threshold" in markdown
    table = pd.read_csv(tmp_path / "leaderboard_thresholds.csv")
    assert set(zip(table.judge, table.question)) == {("vqascore", "action"), ("vqascore", "subject")}
    judged = [(r, people[(r["method"], r["file"], r["action"])]) for r in images.values()]
    for question, index in (("action", 0), ("subject", 1)):
        line = table[table.question == question].iloc[0]
        scores = np.array([r[f"vqascore.{question}_p_yes"] for r, _ in judged])
        votes = np.array([v[index] for _, v in judged])
        assert line.images == len(judged)
        assert (line.best_threshold, line.Agree_best) == pytest.approx(leaderboard.best_threshold(scores, votes), abs=1e-3)
        assert line.Agree == pytest.approx(100 * np.mean((scores >= 0.5) == votes), abs=1e-3)
        assert line.Agree_best >= line.Agree
    (tmp_path / DB_FILE).unlink()
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=20"])
    assert not (tmp_path / "leaderboard_thresholds.csv").exists(), "without votes no stale thresholds stay"
