"""The offline world's renderer: articulated 2-D characters on varied backgrounds, deterministic from a seed.

Subjects differ only in appearance (colours, limb thickness, head shape, accessories); actions differ
only in joint angles. Every render draws a random position, scale, joint jitter, mirror and background,
so a judge must read the pose or the look, never a fixed pixel. Drawn 4x larger, then downsampled.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32
SUPERSAMPLE = 4

# Canonical body (units; y points down; hip at the origin). Segment angles are absolute, in degrees:
# 0 points straight down, 90 to the image's right, 180 straight up, -90 to the image's left.
TORSO, HEAD_RADIUS = 0.36, 0.11
UPPER_ARM, FOREARM, THIGH, SHIN = 0.18, 0.16, 0.21, 0.2


@dataclass(frozen=True)
class Pose:
    """Joint angles: (upper, lower) segment for each limb; `torso` tilt from upright; `turn` rotates it all."""

    right_arm: tuple[float, float]  # the character's right = image left
    left_arm: tuple[float, float]
    right_leg: tuple[float, float]
    left_leg: tuple[float, float]
    torso: float = 0.0
    turn: float = 0.0


@dataclass(frozen=True)
class Action:
    name: str
    phrase: str  # words for captions: "a red robot {phrase}"
    pose: Pose
    known: bool  # known actions are learned by name; benchmark actions are only ever seen unnamed


@dataclass(frozen=True)
class Look:
    body: tuple[int, int, int]
    head: tuple[int, int, int]
    width: float = 2.0  # limb thickness in output pixels
    head_shape: str = "round"  # round | square | wide
    ears: str | None = None  # cat | bunny | round | floppy
    tail: bool = False
    hat: str | None = None  # cap | tall | crown | pointy | helmet
    hat_colour: tuple[int, int, int] = (30, 30, 30)
    skirt: bool = False
    cape: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Subject:
    name: str
    words: str  # how captions and prompts name it, e.g. "red robot"
    category: str  # human | personality | animal | exemplar (exemplar-only subjects)
    look: Look = field(compare=False)

    @property
    def prompt(self) -> str:
        return f"a {self.words}"


SKIN = (235, 190, 150)
ACTIONS = (
    # Known: the base model learns these by name.
    Action("stand", "standing", Pose((-8, -4), (8, 4), (-6, -3), (6, 3)), True),
    Action("walk", "walking", Pose((-25, -15), (25, 15), (-28, -22), (28, 22)), True),
    Action("run", "running", Pose((-70, -160), (60, 10), (-45, -5), (35, -60)), True),
    Action("wave", "waving", Pose((-125, -175), (8, 4), (-6, -3), (6, 3)), True),
    Action("arms_out", "spreading the arms", Pose((-90, -90), (90, 90), (-6, -3), (6, 3)), True),
    Action("sit", "sitting", Pose((30, 15), (40, 25), (85, 5), (95, 0)), True),
    Action("star_jump", "doing a star jump", Pose((-125, -130), (125, 130), (-38, -38), (38, 38)), True),
    Action("bow", "bowing", Pose((45, 35), (55, 45), (-6, -3), (6, 3), torso=-55), True),
    # Benchmark: learned only from exemplars; from one limb to the whole body.
    Action("salute", "saluting", Pose((-100, 140), (8, 4), (-6, -3), (6, 3)), False),
    Action("point", "pointing to the side", Pose((-90, -90), (8, 4), (-6, -3), (6, 3)), False),
    Action("raise_hand", "raising one hand", Pose((-8, -4), (172, 178), (-6, -3), (6, 3)), False),
    Action("cheer", "cheering with both arms up", Pose((-158, -165), (158, 165), (-6, -3), (6, 3)), False),
    Action("kick", "kicking to the side", Pose((-45, -30), (45, 30), (-88, -92), (6, 3)), False),
    Action("flamingo", "standing on one leg", Pose((-50, 35), (50, -35), (-4, -2), (65, -55)), False),
    Action("squat", "squatting", Pose((-35, 75), (35, -75), (-75, -5), (75, 5)), False),
    Action("handstand", "doing a handstand", Pose((-150, -160), (150, 160), (-22, -15), (22, 15), turn=180), False),
)
KNOWN_ACTIONS = tuple(a for a in ACTIONS if a.known)
BENCHMARK_ACTIONS = tuple(a for a in ACTIONS if not a.known)

SUBJECTS = (
    # Generic humans
    Subject("man", "man in blue", "human", Look((40, 70, 200), SKIN)),
    Subject("woman", "woman in red", "human", Look((205, 40, 45), SKIN, skirt=True)),
    Subject("boy", "boy in green", "human", Look((40, 160, 60), SKIN, width=1.5, hat="cap", hat_colour=(40, 160, 60))),
    Subject("girl", "girl in pink", "human", Look((235, 110, 180), SKIN, width=1.5, skirt=True)),
    Subject("old_man", "old man in grey", "human", Look((120, 120, 120), (245, 245, 245))),
    Subject("chef", "chef", "human", Look((250, 250, 250), SKIN, hat="tall", hat_colour=(255, 255, 255))),
    Subject("soldier", "soldier", "human", Look((95, 110, 50), SKIN, width=2.5, hat="helmet", hat_colour=(70, 85, 35))),
    Subject("nurse", "nurse in teal", "human", Look((0, 150, 150), SKIN, hat="cap", hat_colour=(255, 255, 255))),
    # Personalities: one fixed, distinctive look each
    Subject("robot", "silver robot", "personality", Look((125, 140, 165), (125, 140, 165), width=3, head_shape="square")),
    Subject("king", "purple king", "personality", Look((120, 40, 160), SKIN, hat="crown", hat_colour=(240, 200, 20))),
    Subject("wizard", "blue wizard", "personality", Look((30, 30, 120), (240, 240, 240), hat="pointy", hat_colour=(30, 30, 120))),
    Subject("superhero", "superhero", "personality", Look((30, 60, 220), SKIN, width=2.5, cape=(220, 20, 30))),
    Subject("knight", "knight", "personality", Look((90, 90, 100), (90, 90, 100), width=3, head_shape="square", hat="helmet", hat_colour=(60, 60, 70))),
    Subject("pirate", "pirate", "personality", Look((20, 20, 20), SKIN, hat="pointy", hat_colour=(20, 20, 20), cape=(150, 20, 20))),
    Subject("clown", "clown", "personality", Look((250, 140, 0), (255, 255, 255), head_shape="wide", hat="cap", hat_colour=(220, 0, 0))),
    # Animals
    Subject("cat", "orange cat", "animal", Look((235, 130, 30), (235, 130, 30), ears="cat", tail=True)),
    Subject("dog", "brown dog", "animal", Look((130, 80, 40), (130, 80, 40), ears="floppy", tail=True)),
    Subject("rabbit", "white rabbit", "animal", Look((245, 245, 245), (245, 245, 245), width=1.5, ears="bunny")),
    Subject("bear", "brown bear", "animal", Look((90, 50, 20), (90, 50, 20), width=3, ears="round", head_shape="wide")),
    Subject("panda", "panda", "animal", Look((20, 20, 20), (250, 250, 250), width=3, ears="round")),
    Subject("fox", "red fox", "animal", Look((220, 70, 20), (220, 70, 20), width=1.5, ears="cat", tail=True, head_shape="wide")),
    Subject("frog", "green frog", "animal", Look((60, 200, 40), (60, 200, 40), head_shape="wide")),
    Subject("mouse", "grey mouse", "animal", Look((110, 110, 120), (110, 110, 120), width=1.5, ears="round", tail=True)),
    # Exemplar-only: they perform the benchmark actions in the exemplars, and are never evaluated
    Subject("puppet", "yellow puppet", "exemplar", Look((240, 210, 30), (240, 210, 30), width=2.5)),
    Subject("mannequin", "teal mannequin", "exemplar", Look((0, 110, 110), (0, 110, 110), head_shape="square")),
    Subject("doll", "maroon doll", "exemplar", Look((120, 20, 50), SKIN, skirt=True)),
)
EVAL_SUBJECTS = tuple(s for s in SUBJECTS if s.category != "exemplar")
EXEMPLAR_SUBJECTS = tuple(s for s in SUBJECTS if s.category == "exemplar")

# The unnamed task's exemplar actors (benchmark=synthetic_unnamed): three puppets who share the yellow puppet's
# body, a look no evaluation subject has, and differ in what they wear (a cap, a skirt, a cape), as the people in
# photos of an action share a human body and differ in clothes. They are no subjects of their own: the subject
# judge, trained on SUBJECTS, reads each as the puppet, so a method that copies what they share shows as Leak.
_PUPPET = next(s for s in EXEMPLAR_SUBJECTS if s.name == "puppet")
PUPPET_ACTORS = (
    Subject("puppet_cap", "yellow puppet in a blue cap", "exemplar", replace(_PUPPET.look, hat="cap", hat_colour=(40, 70, 200))),
    Subject("puppet_skirt", "yellow puppet in a skirt", "exemplar", replace(_PUPPET.look, skirt=True)),
    Subject("puppet_cape", "yellow puppet in a green cape", "exemplar", replace(_PUPPET.look, cape=(40, 160, 60))),
)


def _direction(angle: float) -> np.ndarray:
    radians = math.radians(angle)
    return np.array([math.sin(radians), math.cos(radians)])


def _skeleton(pose: Pose) -> dict[str, np.ndarray]:
    """Joint positions in body units, before placement."""
    hip = np.zeros(2)
    neck = hip + TORSO * _direction(180 + pose.torso)
    head = neck + HEAD_RADIUS * 1.1 * _direction(180 + pose.torso)
    joints = {"hip": hip, "neck": neck, "head": head}
    for limb, root, (a, b), (l1, l2) in (
        ("right_arm", neck, pose.right_arm, (UPPER_ARM, FOREARM)),
        ("left_arm", neck, pose.left_arm, (UPPER_ARM, FOREARM)),
        ("right_leg", hip, pose.right_leg, (THIGH, SHIN)),
        ("left_leg", hip, pose.left_leg, (THIGH, SHIN)),
    ):
        middle = root + l1 * _direction(a)
        joints[f"{limb}_mid"], joints[f"{limb}_end"] = middle, middle + l2 * _direction(b)
    return joints


def jittered(pose: Pose, rng: np.random.Generator, degrees: float) -> Pose:
    def j(pair):
        return tuple(float(v + rng.uniform(-degrees, degrees)) for v in pair)

    return Pose(j(pose.right_arm), j(pose.left_arm), j(pose.right_leg), j(pose.left_leg),
                pose.torso + float(rng.uniform(-degrees, degrees) / 2), pose.turn)


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """A pale vertical gradient with a ground band: varied, and never as saturated as a character."""
    top, bottom = rng.uniform(120, 225, 3), rng.uniform(100, 215, 3)
    grey = rng.uniform(0.3, 0.8)
    top, bottom = top * (1 - grey) + top.mean() * grey, bottom * (1 - grey) + bottom.mean() * grey
    t = np.linspace(0, 1, size)[:, None, None]
    pixels = np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()
    ground = int(size * rng.uniform(0.7, 0.95))
    pixels[ground:] *= rng.uniform(0.8, 0.95)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Placement:
    """Where one render puts the figure (supersampled pixels): everything the rng decides before the
    background, so a render and its pose map drawn from equal rngs agree exactly."""

    pose: Pose  # the jittered pose
    points: dict[str, np.ndarray]  # joints in body units, turned and mirrored
    rotation: np.ndarray
    mirror: float
    scale: float  # pixels per unit
    offset: np.ndarray

    def px(self, p) -> tuple[float, float]:
        return tuple(p * self.scale + self.offset)

    def along(self, name: str, vector) -> tuple[float, float]:
        """A point offset from a joint in the figure's own (turned, mirrored) frame."""
        return self.px(self.points[name] + (self.rotation @ np.asarray(vector, dtype=float)) * np.array([self.mirror, 1.0]))


def place(action: Action, rng: np.random.Generator, size: int = SIZE, jitter: float = 7.0) -> Placement:
    """Draw the pose jitter, mirror, scale and position of one render from `rng`."""
    big = size * SUPERSAMPLE
    pose = jittered(action.pose, rng, jitter)
    joints = _skeleton(pose)
    turn = math.radians(pose.turn)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    points = {k: (rotation @ v) * np.array([mirror, 1.0]) for k, v in joints.items()}

    extent = np.array(list(points.values()))
    low, high = extent.min(0) - HEAD_RADIUS * 1.6, extent.max(0) + HEAD_RADIUS * 1.6
    scale = big * rng.uniform(0.68, 0.85) / max(high - low)  # pixels per unit
    room = big - (high - low) * scale
    offset = rng.uniform(0, 1, 2) * np.maximum(room, 0) - low * scale
    return Placement(pose, points, rotation, mirror, scale, offset)


def render(subject: Subject, action: Action, rng: np.random.Generator, size: int = SIZE,
           jitter: float = 7.0) -> Image.Image:
    """One RGB image of `subject` doing `action`, all variation drawn from `rng`."""
    look, big = subject.look, size * SUPERSAMPLE
    placed = place(action, rng, size, jitter)
    pose, points, rotation, mirror, scale = placed.pose, placed.points, placed.rotation, placed.mirror, placed.scale
    px, along = placed.px, placed.along

    image = background(rng, size).resize((big, big), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    width = max(1, round(look.width * SUPERSAMPLE * scale / (big * 0.8)))
    up = rotation @ _direction(180 + pose.torso) * np.array([mirror, 1.0])  # head direction on screen

    if look.cape:
        shoulder_l, shoulder_r = along("neck", (-0.08, 0.02)), along("neck", (0.08, 0.02))
        draw.polygon([shoulder_l, shoulder_r, along("hip", (0.16, 0.1)), along("hip", (-0.16, 0.1))], fill=look.cape)
    if look.tail:
        draw.line([px(points["hip"]), along("hip", (0.22, 0.05)), along("hip", (0.3, -0.1))], fill=look.body, width=width)
    for limb in ("right_leg", "left_leg"):
        draw.line([px(points["hip"]), px(points[f"{limb}_mid"]), px(points[f"{limb}_end"])], fill=look.body, width=width, joint="curve")
    if look.skirt:
        draw.polygon([along("hip", (0, -0.12)), along("hip", (-0.13, 0.08)), along("hip", (0.13, 0.08))], fill=look.body)
    draw.line([px(points["hip"]), px(points["neck"])], fill=look.body, width=round(width * 1.5))
    for limb in ("right_arm", "left_arm"):
        draw.line([px(points["neck"]), px(points[f"{limb}_mid"]), px(points[f"{limb}_end"])], fill=look.body, width=width, joint="curve")

    head, r = points["head"], HEAD_RADIUS * scale
    cx, cy = px(head)
    side = np.array([up[1], -up[0]])  # perpendicular to the head direction

    def at(u, s):  # head-local point: u along the head direction, s sideways, in head radii
        return px(head + (up * u + side * s) * HEAD_RADIUS)

    if look.ears == "cat":
        for s in (-1, 1):
            draw.polygon([at(0.6, 0.9 * s), at(1.6, 0.7 * s), at(0.9, 0.1 * s)], fill=look.head)
    elif look.ears == "bunny":
        for s in (-1, 1):
            draw.line([at(0.7, 0.45 * s), at(2.2, 0.6 * s)], fill=look.head, width=round(r * 0.6))
    elif look.ears == "round":
        for s in (-1, 1):
            ex, ey = at(0.8, 0.8 * s)
            draw.ellipse([ex - r * 0.45, ey - r * 0.45, ex + r * 0.45, ey + r * 0.45], fill=look.body)
    elif look.ears == "floppy":
        for s in (-1, 1):
            draw.line([at(0.5, 0.9 * s), at(-0.6, 1.2 * s)], fill=look.body, width=round(r * 0.55))
    if look.head_shape == "square":
        draw.polygon([at(1, 1), at(1, -1), at(-1, -1), at(-1, 1)], fill=look.head)
    elif look.head_shape == "wide":
        draw.polygon([at(0.8 * math.cos(t), 1.35 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 24, endpoint=False)], fill=look.head)
    else:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=look.head)
    if look.hat == "cap":
        draw.polygon([at(0.6, -1.0), at(0.6, 1.5), at(1.3, 0.9), at(1.3, -1.0)], fill=look.hat_colour)
    elif look.hat == "tall":
        draw.polygon([at(0.7, -0.8), at(0.7, 0.8), at(2.4, 0.9), at(2.4, -0.9)], fill=look.hat_colour)
    elif look.hat == "crown":
        draw.polygon([at(0.7, -0.9), at(0.7, 0.9), at(1.7, 1.0), at(1.2, 0.45), at(1.7, 0), at(1.2, -0.45), at(1.7, -1.0)], fill=look.hat_colour)
    elif look.hat == "pointy":
        draw.polygon([at(0.6, -1.3), at(0.6, 1.3), at(2.6, 0.2)], fill=look.hat_colour)
    elif look.hat == "helmet":
        draw.polygon([at(0.2, -1.15), at(0.2, 1.15), at(1.25, 0.8), at(1.25, -0.8)], fill=look.hat_colour)
    return image.resize((size, size), Image.LANCZOS)


# OpenPose's body colours (ControlNet's openpose maps), per segment of the world's skeleton: the figure has one
# shoulder point (the neck) and one hip, so OpenPose's neck-to-hip colour stands for the torso.
POSE_COLOURS = (
    ("neck", "head", (0, 0, 255)),
    ("neck", "hip", (0, 255, 0)),
    ("neck", "right_arm_mid", (255, 170, 0)), ("right_arm_mid", "right_arm_end", (255, 255, 0)),
    ("neck", "left_arm_mid", (170, 255, 0)), ("left_arm_mid", "left_arm_end", (85, 255, 0)),
    ("hip", "right_leg_mid", (0, 255, 85)), ("right_leg_mid", "right_leg_end", (0, 255, 170)),
    ("hip", "left_leg_mid", (0, 170, 255)), ("left_leg_mid", "left_leg_end", (0, 85, 255)),
)


def pose_map(action: Action, rng: np.random.Generator, size: int = SIZE, jitter: float = 7.0) -> Image.Image:
    """The OpenPose-style map of the render that an equal `rng` draws: coloured limbs on black, placed as the
    figure is, and nothing of the subject's look (it takes no subject), the condition of a pose ControlNet."""
    big = size * SUPERSAMPLE
    placed = place(action, rng, size, jitter)
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    width = max(1, round(big * 0.045))
    for start, end, colour in POSE_COLOURS:
        draw.line([placed.px(placed.points[start]), placed.px(placed.points[end])], fill=colour, width=width)
    return image.resize((size, size), Image.LANCZOS)


def pose_maps(actions: list[Action], seed: int, size: int = SIZE) -> np.ndarray:
    """uint8 (n, size, size, 3): the pose map of `render_batch`'s render i for each `actions[i]`."""
    return np.stack([np.asarray(pose_map(a, np.random.default_rng([seed, i]), size)) for i, a in enumerate(actions)])


def _render_range(pairs, seed: int, start: int, size: int) -> np.ndarray:
    return np.stack([np.asarray(render(s, a, np.random.default_rng([seed, start + i]), size)) for i, (s, a) in enumerate(pairs)])


def render_batch(pairs: list[tuple[Subject, Action]], seed: int, size: int = SIZE) -> np.ndarray:
    """Render (subject, action) pairs as uint8 (n, size, size, 3); render i depends only on (seed, i), so
    large batches are split across processes with the same result."""
    workers = min(os.cpu_count() or 1, len(pairs) // 2000)
    if workers < 2:
        return _render_range(pairs, seed, 0, size)
    bounds = np.linspace(0, len(pairs), workers + 1).astype(int)
    with ProcessPoolExecutor(workers) as pool:
        parts = pool.map(_render_range, [pairs[a:b] for a, b in zip(bounds, bounds[1:])], [seed] * workers,
                         bounds[:-1].tolist(), [size] * workers)
        return np.concatenate(list(parts))


def random_dataset(count: int, seed: int, subjects=SUBJECTS, actions=ACTIONS):
    """`count` renders of uniformly drawn (subject, action) pairs: uint8 images and their label indices."""
    rng = np.random.default_rng(seed)
    subject_ids = rng.integers(len(subjects), size=count)
    action_ids = rng.integers(len(actions), size=count)
    images = render_batch([(subjects[s], actions[a]) for s, a in zip(subject_ids, action_ids)], seed)
    return images, subject_ids, action_ids
