"""Curated allowlist of PHOTOGRAPHS in the offline image sources (drawings, renders, logos, text excluded).

How the lists were made: every image file in each source was listed and scored with simple statistics on
a 512 px thumbnail (quantised colour count per pixel, chroma, edge density, fraction of perfectly flat
pixels, median absolute Laplacian: photos have sensor noise and texture, renders have large flat or
smooth-gradient areas), then a contact sheet of the candidates was inspected by eye. Only colour
photographs of real scenes are kept. Grayscale photos are left out on purpose (the tokenizers are trained
on RGB statistics and grayscale tiles make reconstruction artificially easy). Photos of ONE scene (stereo
pairs, two viewpoints, an edited copy) share a ``group`` so that a scene never lands in both splits.

``EXCLUDED`` documents the notable rejections with the reason; files not named anywhere were rejected as
obvious non-photos by the same survey (UI art, logos, synthetic test patterns).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEBIAN_SOURCES", "EXCLUDED", "SKIMAGE_PHOTOS", "SKLEARN_PHOTOS", "DebianPhotoSource", "PhotoSpec"]


@dataclass(frozen=True)
class PhotoSpec:
    """One allowed photograph."""

    path: str  # file path inside the package tree / data folder
    group: str  # scene id: photos sharing it always go to the same split
    reason: str  # why it is kept
    license: str | None = None  # set when the licence is not in a Debian copyright file


@dataclass(frozen=True)
class DebianPhotoSource:
    """A Debian package with photographs, and how its installed paths map to its upstream source tree."""

    package: str
    installed_prefix: str  # e.g. "usr/share/backgrounds/mate/"
    upstream_prefix: str  # what that prefix is in the upstream tree (DEP-5 patterns are relative to it)
    photos: tuple[PhotoSpec, ...]

    def upstream_path(self, installed_path: str) -> str:
        if not installed_path.startswith(self.installed_prefix):
            raise ValueError(f"{installed_path!r} is not under {self.installed_prefix!r} in {self.package}")
        return self.upstream_prefix + installed_path[len(self.installed_prefix):]


def _specs(prefix: str, entries: list[tuple[str, str, str]]) -> tuple[PhotoSpec, ...]:
    return tuple(PhotoSpec(path=prefix + rel, group=group, reason=reason) for rel, group, reason in entries)


_MATE = "usr/share/backgrounds/mate/"
_PLASMA = "usr/share/wallpapers/"
_OPENCV = "usr/share/doc/opencv-doc/examples/"

DEBIAN_SOURCES: tuple[DebianPhotoSource, ...] = (
    DebianPhotoSource(
        package="mate-backgrounds",
        installed_prefix=_MATE,
        upstream_prefix="",
        photos=_specs(_MATE + "nature/", [
            ("Aqua.jpg", "mate/aqua", "macro photo of a water drop; camera noise, natural bokeh"),
            ("Blinds.jpg", "mate/blinds", "macro photo of a green leaf"),
            ("Dune.jpg", "mate/dune", "photo of dune grass and sea"),
            ("FreshFlower.jpg", "mate/freshflower", "macro photo of an orange flower"),
            ("Garden.jpg", "mate/garden", "photo of a red flower, shallow depth of field"),
            ("GreenMeadow.jpg", "mate/greenmeadow", "photo of grass blades"),
            ("LadyBird.jpg", "mate/ladybird", "macro photo of a ladybird on forget-me-nots"),
            ("RainDrops.jpg", "mate/raindrops", "photo of rain drops on leaves"),
            ("Storm.jpg", "mate/storm", "landscape photo of a storm sky over a road"),
            ("TwoWings.jpg", "mate/twowings", "macro photo of dandelion seeds"),
            ("Wood.jpg", "mate/wood", "close-up photo of a wooden surface"),
            ("YellowFlower.jpg", "mate/yellowflower", "macro photo of a yellow flower"),
        ]),
    ),
    DebianPhotoSource(
        package="plasma-workspace-wallpapers",
        installed_prefix=_PLASMA,
        upstream_prefix="",
        photos=_specs(_PLASMA, [
            ("BytheWater/contents/images/2560x1600.jpg", "plasma/bythewater", "photo of a wooden pier at a lake"),
            ("DarkestHour/contents/images/2560x1600.jpg", "plasma/darkesthour", "photo of a misty lake at dusk (Risto Saukonpaa)"),
            ("EveningGlow/contents/images/2560x1600.jpg", "plasma/eveningglow", "photo of rowing boats at sunset"),
            ("FallenLeaf/contents/images/2560x1600.jpg", "plasma/fallenleaf", "photo of autumn leaves on the ground"),
            ("Kite/contents/images/2560x1600.jpg", "plasma/kite", "photo of a kite in a cloudy sky (Risto Saukonpaa)"),
            ("OneStandsOut/contents/images/2560x1600.jpg", "plasma/onestandsout", "photo of moss with one flower (Risto Saukonpaa)"),
            ("Path/contents/images/2560x1600.jpg", "plasma/path", "photo of a forest path (Risto Saukonpaa)"),
            ("summer_1am/contents/images/2560x1600.jpg", "plasma/summer_1am", "photo of a lake at a summer night (Risto Saukonpaa)"),
        ]),
    ),
    DebianPhotoSource(
        package="opencv-doc",
        installed_prefix=_OPENCV,
        upstream_prefix="samples/",
        photos=_specs(_OPENCV, [
            ("data/aero1.jpg", "opencv/aero", "aerial photo of a town (stitching pair)"),
            ("data/aero3.jpg", "opencv/aero", "aerial photo, overlaps aero1: same group"),
            ("data/aloeL.jpg", "opencv/aloe", "Middlebury stereo photo of an aloe plant (left view)"),
            ("data/aloeR.jpg", "opencv/aloe", "right view of the same scene: same group"),
            ("data/apple.jpg", "opencv/apple", "studio photo of an apple"),
            ("data/baboon.jpg", "opencv/baboon", "the classic mandrill photo"),
            ("data/board.jpg", "opencv/board", "photo of a circuit board"),
            ("data/building.jpg", "opencv/building", "photo of a building"),
            ("data/butterfly.jpg", "opencv/butterfly", "photo of a butterfly on a leaf"),
            ("data/chicky_512.png", "opencv/chicky", "photo of a dog"),
            ("data/ela_original.jpg", "opencv/ela", "photo of a notebook (ela_modified.jpg is an edited copy: left out)"),
            ("data/fruits.jpg", "opencv/fruits", "photo of cut fruit"),
            ("data/graf1.png", "opencv/graf", "Oxford affine set: photo of a graffiti wall"),
            ("data/graf3.png", "opencv/graf", "same wall from another viewpoint: same group"),
            ("data/home.jpg", "opencv/home", "photo of a building against the sky"),
            ("data/left.jpg", "opencv/stereo_books", "stereo photo of books (left view)"),
            ("data/right.jpg", "opencv/stereo_books", "right view of the same scene: same group"),
            ("data/leuvenA.jpg", "opencv/leuven", "photo of a street in Leuven"),
            ("data/leuvenB.jpg", "opencv/leuven", "same street, other exposure: same group"),
            ("data/messi5.jpg", "opencv/messi", "photo of a football player"),
            ("data/orange.jpg", "opencv/orange", "studio photo of an orange"),
            ("data/rubberwhale1.png", "opencv/rubberwhale", "Middlebury optical-flow photo of toys"),
            ("data/rubberwhale2.png", "opencv/rubberwhale", "next frame of the same scene: same group"),
            ("data/squirrel_cls.jpg", "opencv/squirrel", "photo of a squirrel"),
            ("data/stuff.jpg", "opencv/stuff", "photo of small objects on a table"),
            ("hfs/data/000.jpg", "opencv/hfs000", "photo of a robin"),
            ("hfs/data/001.jpg", "opencv/hfs001", "photo of a lake shore"),
            ("hfs/data/002.jpg", "opencv/hfs002", "photo of a tree in a field"),
        ]),
    ),
)

# Photographs bundled in scikit-image (files in ``skimage/data``); licences from the skimage.data docstrings.
SKIMAGE_PHOTOS: tuple[PhotoSpec, ...] = (
    PhotoSpec("astronaut.png", "skimage/astronaut", "portrait photo (NASA)", "public domain (NASA)"),
    PhotoSpec("chelsea.png", "skimage/chelsea", "photo of a cat", "CC0 (Stefan van der Walt)"),
    PhotoSpec("coffee.png", "skimage/coffee", "photo of a coffee cup", "CC0 (Rachel Michetti)"),
    PhotoSpec("rocket.jpg", "skimage/rocket", "photo of a rocket launch (SpaceX)", "public domain (SpaceX)"),
    PhotoSpec("hubble_deep_field.jpg", "skimage/hubble", "telescope photo of galaxies (NASA)", "public domain (NASA)"),
    PhotoSpec("motorcycle_left.png", "skimage/motorcycle", "Middlebury 2014 stereo photo (left)",
              "Middlebury stereo dataset; cite Scharstein et al., GCPR 2014"),
    PhotoSpec("motorcycle_right.png", "skimage/motorcycle", "right view of the same scene: same group",
              "Middlebury stereo dataset; cite Scharstein et al., GCPR 2014"),
)

# scikit-learn's ``load_sample_images`` (used only when scikit-learn is installed).
SKLEARN_PHOTOS: tuple[PhotoSpec, ...] = (
    PhotoSpec("china.jpg", "sklearn/china", "photo of a Chinese temple",
              "CC-BY (see sklearn/datasets/images/README.txt)"),
    PhotoSpec("flower.jpg", "sklearn/flower", "photo of a flower", "CC-BY (see sklearn/datasets/images/README.txt)"),
)

EXCLUDED: dict[str, str] = {
    "mate-backgrounds:abstract/*": "digital art / paintings (Elephants is a painting; Silk, Waves, Flow are renders)",
    "mate-backgrounds:desktop/*": "UI wallpapers: stripes, logos, smooth gradients",
    "plasma-workspace-wallpapers:Autumn": "painterly illustration of a tree",
    "plasma-workspace-wallpapers:ColdRipple, Grey": "grayscale photographs",
    "plasma-workspace-wallpapers:ColorfulCups": "looks rendered (flat shading); uncertain, left out",
    "plasma-workspace-wallpapers:Volna": "smooth, low-noise image of a wave; likely a render, left out",
    "plasma-workspace-wallpapers:others": "vector / 3D art (Altai, Canopee, Cascade, Cluster, Elarun, Flow, FlyingKonqui, "
    "Honeywave, IceCold, Kay, Kokkini, MilkyWay, Opal, PastelHills, Patak, SafeLanding, Shell)",
    "opencv-doc:grayscale": "basketball*, box*, left01-14, right01-14 (chessboard calibration)",
    "opencv-doc:synthetic": "Blender_Suzanne*, blox, chessboard, detect_blob, digits, ellipses, gradient, pic1-6, "
    "templ, tmpl, mask, notes, ml, logos, HappyFish (cartoon), smarties (render)",
    "opencv-doc:other": "starry_night (painting), sudoku / text_* / imageText* (text), licenseplate_motion "
    "(synthetic blur), ela_modified (edited copy), pca_test1 (near-binary cut-outs), aloeGT (disparity map)",
    "skimage": "camera, coins, moon, page, text, grass, gravel, brick (grayscale); colorwheel, logo, horse "
    "(synthetic); immunohistochemistry, retina (microscopy / medical)",
}
