"""Small corpora in the official layouts of FMA, MTG-Jamendo, MusicBench and Song Describer.

Audio is generated (tones, encoded as the real formats: mp3 or wav); metadata files
use the real column names, header layouts and encodings, plus the faults each test
checks for (malformed rows, bytes that are not UTF-8, missing audio, stray audio,
paths that leave the root).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050


def tone(frequency: float, seconds: float = 0.5, channels: int = 2, sr: int = SR) -> np.ndarray:
    """``audio_SC`` float32 (soundfile's layout)."""
    t_S = np.arange(round(seconds * sr)) / sr
    mono_S = 0.3 * np.sin(2 * np.pi * frequency * t_S)
    return np.stack([mono_S] * channels, axis=1).astype(np.float32)


def write_audio(path: Path, frequency: float, seconds: float = 0.5, sr: int = SR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "MP3" if path.name.endswith(".mp3") else "WAV"
    sf.write(path, tone(frequency, seconds, sr=sr), sr, format=fmt)


def csv_text(rows: list[list[str]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- FMA

FMA_COLUMNS = [
    *(("album", c) for c in ("comments", "date_created", "date_released", "engineer")),
    *(("album", c) for c in ("favorites", "id", "information", "listens", "producer", "tags")),
    *(("album", c) for c in ("title", "tracks", "type")),
    *(("artist", c) for c in ("active_year_begin", "active_year_end", "associated_labels")),
    *(("artist", c) for c in ("bio", "comments", "date_created", "favorites", "id", "latitude")),
    *(("artist", c) for c in ("location", "longitude", "members", "name", "related_projects")),
    *(("artist", c) for c in ("tags", "website", "wikipedia_page")),
    ("set", "split"),
    ("set", "subset"),
    *(("track", c) for c in ("bit_rate", "comments", "composer", "date_created")),
    *(("track", c) for c in ("date_recorded", "duration", "favorites", "genre_top", "genres")),
    *(("track", c) for c in ("genres_all", "information", "interest", "language_code")),
    *(("track", c) for c in ("license", "listens", "lyricist", "number", "publisher", "tags")),
    ("track", "title"),
]


def fma_row(track_id: int, **values: str) -> list[str]:
    defaults = {
        ("artist", "name"): "AWOL",
        ("artist", "bio"): "<p>A line,\nand a second line</p>",
        ("set", "split"): "training",
        ("set", "subset"): "small",
        ("track", "duration"): "168",
        ("track", "genre_top"): "Hip-Hop",
        ("track", "genres"): "[21]",
        ("track", "genres_all"): "[21]",
        ("track", "title"): f"Track {track_id}",
        ("track", "tags"): "[]",
    }
    named = {key: values.get(f"{key[0]}_{key[1]}", default) for key, default in defaults.items()}
    return [str(track_id)] + [named.get(column, "") for column in FMA_COLUMNS]


FMA_GENRES = [
    ["genre_id", "#tracks", "parent", "title", "top_level"],
    ["12", "32923", "0", "Rock", "12"],
    ["21", "8389", "0", "Hip-Hop", "21"],
    ["25", "9261", "12", "Punk", "12"],
    ["38", "38154", "0", "Experimental", "38"],
    ["1", "8693", "38", "Avant-Garde", "38"],
]


def build_fma(root: Path) -> Path:
    """fma_metadata + fma_small with every fault the FMA tests check."""
    meta = root / "fma_metadata"
    meta.mkdir(parents=True)
    header = [
        [""] + [group for group, _ in FMA_COLUMNS],
        [""] + [name for _, name in FMA_COLUMNS],
        ["track_id"] + [""] * len(FMA_COLUMNS),
    ]
    rows = [
        fma_row(2),  # line 4..5 (the bio spans two lines)
        fma_row(3, set_split="validation"),
        fma_row(
            5,
            set_split="test",
            track_genre_top="Rock",
            track_genres="[25]",
            track_genres_all="[12, 25]",
        ),
        fma_row(
            10, set_subset="medium", track_genre_top="Experimental", track_genres_all="[1, 38]"
        ),
        fma_row(20, track_genre_top="", track_genres_all="[21, 999]"),  # unknown genre id
        fma_row(26, track_genres_all="[21, "),  # malformed list
        fma_row(30),  # no audio file
        fma_row(40, set_split="holdout"),  # unknown split
    ]
    text = csv_text(header + rows)
    text += "41,too,few,fields\n"
    data = text.encode("utf-8")
    bad = csv_text([fma_row(50, track_title="Caf\x00")]).encode().replace(b"\x00", b"\xe9")
    (meta / "tracks.csv").write_bytes(data + bad)
    (meta / "genres.csv").write_text(csv_text(FMA_GENRES))
    for track_id, frequency in ((2, 220), (3, 330), (5, 440), (20, 550), (26, 660), (40, 770)):
        name = f"{track_id:06d}"
        write_audio(root / "fma_small" / name[:3] / f"{name}.mp3", frequency)
    write_audio(root / "fma_small" / "000" / "000099.mp3", 880)  # not in the metadata
    write_audio(root / "fma_medium" / "000" / "000010.mp3", 990)
    for track_id in (2, 3, 5):
        name = f"{track_id:06d}"
        write_audio(root / "fma_medium" / name[:3] / f"{name}.mp3", 300 + track_id)
    return root


# ---------------------------------------------------------------------------- MTG-Jamendo

MTG_HEADER = ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS"]


def mtg_row(number: int, duration: str, *tags: str) -> list[str]:
    return [
        f"track_{number:07d}",
        "artist_000014",
        "album_000031",
        f"{number % 100:02d}/{number}.mp3",
        duration,
        *tags,
    ]


def build_mtg_jamendo(root: Path) -> Path:
    data = root / "data"
    rows = [
        mtg_row(214, "124.6", "genre---punkrock"),
        mtg_row(215, "80.0", "genre---rock", "instrument---guitar", "mood/theme---energetic"),
        mtg_row(1376256, "166.0", "genre---easylistening", "mood/theme---corporate"),
        mtg_row(1376257, "188.1", "instrument---piano", "mood/theme---happy"),
        mtg_row(1376258, "185.1", "genre---pop"),  # no audio file
        mtg_row(1376259, "not-a-number", "genre---pop"),
        mtg_row(1376260, "170.2", "genre-pop"),  # malformed tag
        ["track_1376261", "artist_1", "album_1", "../../outside.mp3", "100.0", "genre---pop"],
        mtg_row(214, "124.6", "genre---punkrock"),  # duplicate
    ]
    (data / "splits" / "split-0").mkdir(parents=True)
    (data / "raw_30s_cleantags.tsv").write_text(csv_text([MTG_HEADER, *rows], "\t"))
    mood = [mtg_row(1376256, "166.0", "mood/theme---corporate")]
    mood.append(mtg_row(1376257, "188.1", "mood/theme---happy"))
    (data / "autotagging_moodtheme.tsv").write_text(csv_text([MTG_HEADER, *mood], "\t"))
    splits = {
        "train": [mtg_row(214, "124.6", "genre---punkrock"), mtg_row(1376256, "166.0")],
        "validation": [mtg_row(215, "80.0", "genre---rock")],
        "test": [mtg_row(1376257, "188.1", "instrument---piano")],
    }
    for split, split_rows in splits.items():
        path = data / "splits" / "split-0" / f"autotagging-{split}.tsv"
        path.write_text(csv_text([MTG_HEADER, *split_rows], "\t"))
    for number, frequency in ((214, 220), (215, 330), (1376256, 440), (1376257, 550)):
        folder = root / "audio" / f"{number % 100:02d}"
        write_audio(folder / f"{number}.mp3", frequency)
        write_audio(folder / f"{number}.low.mp3", frequency, sr=16000)
    write_audio(root / "audio" / "99" / "999.mp3", 660)  # not in the metadata
    write_audio(root.parent / "outside.mp3", 770)
    return root


# ---------------------------------------------------------------------------- MusicBench


def musicbench_row(location: str, caption: str, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "location": location,
        "main_caption": caption,
        "alt_caption": "",
        "prompt_aug": "",
        "prompt_ch": "The chord sequence is Am, F.",
        "prompt_bt": "The beat counts to 4.",
        "prompt_bpm": "The bpm is 120.",
        "prompt_key": "This song is in the key of A minor.",
        "beats": [[0.5, 1.0, 1.5], [1.0, 2.0, 3.0]],
        "bpm": 120.0,
        "chords": ["Am", "F"],
        "chords_time": [0.0, 2.0],
        "key": ["A", "minor"],
        "keyprob": [0.83],
        "is_audioset_eval": False,
    }
    row.update(extra)
    return row


def build_musicbench(root: Path) -> Path:
    train = [
        json.dumps(musicbench_row("data/-0Gj8-vB1q4.wav", "A calm piano piece.")),
        json.dumps(musicbench_row("data_aug2/-0Gj8-vB1q4_1.wav", "Calm piano, pitched up.")),
        json.dumps(musicbench_row("data/-0Gj8-vB1q4.wav", "A rephrased calm piano piece.")),
        "",
        '{"location": "data/broken.wav", "main_caption": ',  # malformed JSON
        json.dumps(musicbench_row("data/missing.wav", "No audio for this one.")),
        json.dumps({"main_caption": "no location"}),
        json.dumps(musicbench_row("/etc/passwd", "absolute path")),
    ]
    test_a = [json.dumps(musicbench_row("data/-5xOcMJpTUk.wav", "A rock song.", key="E major"))]
    test_b = [
        json.dumps(
            musicbench_row(
                "data/-5xOcMJpTUk.wav",
                "A rock song. The bpm is 120.",
                alt_caption="A rock song.",
                key="E major",
                is_audioset_eval=True,
            )
        )
    ]
    (root).mkdir(parents=True, exist_ok=True)
    (root / "MusicBench_train.json").write_text("\n".join(train) + "\n")
    (root / "MusicBench_test_A.json").write_text("\n".join(test_a) + "\n")
    # A caption with a byte that is not UTF-8 in test B.
    (root / "MusicBench_test_B.json").write_bytes(
        ("\n".join(test_b) + "\n").encode()
        + b'{"location": "data/x.wav", "main_caption": "caf\xe9"}\n'
    )
    for location, frequency in (
        ("data/-0Gj8-vB1q4.wav", 220),
        ("data_aug2/-0Gj8-vB1q4_1.wav", 330),
        ("data/-5xOcMJpTUk.wav", 440),
        ("data_aug2/stray_2.wav", 550),  # not in any metadata file
    ):
        write_audio(root / "datashare" / location, frequency, seconds=0.6)
    return root


# ---------------------------------------------------------------------------- Song Describer

SDD_HEADER = [
    "caption_id",
    "track_id",
    "caption",
    "is_valid_subset",
    "familiarity",
    "artist_id",
    "album_id",
    "path",
    "duration",
]


def build_song_describer(root: Path) -> Path:
    rows = [
        [
            "7",
            "1051200",
            "Soft synth pads over a slow beat.",
            "True",
            "2",
            "7",
            "9",
            "00/1051200.mp3",
            "202.5",
        ],
        [
            "3",
            "1051200",
            "An ambient track, with a comma",
            "False",
            "0",
            "7",
            "9",
            "00/1051200.mp3",
            "202.5",
        ],
        ["12", "1004034", "Solo electric guitar", "True", "4", "8", "10", "34/1004034.mp3", "99.0"],
        [
            "13",
            "415600",
            "Reggae with a walking bass.",
            "False",
            "3",
            "9",
            "11",
            "00/415600.mp3",
            "150.0",
        ],
        ["14", "415600", "Offbeat guitar chops.", "", "1", "9", "11", "00/415600.mp3", "150.0"],
        ["15", "1004035", "", "True", "1", "8", "10", "35/1004035.mp3", "80.0"],  # empty caption
        ["16", "1004036", "No audio here.", "True", "1", "8", "10", "36/1004036.mp3", "80.0"],
        ["17", "abc", "bad id", "True", "1", "8", "10", "37/abc.mp3", "80.0"],
        ["18", "1004034", "Different path!", "True", "1", "8", "10", "99/1004034.mp3", "99.0"],
        ["12", "1004034", "duplicate caption id", "True", "1", "8", "10", "34/1004034.mp3", "99.0"],
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "song_describer.csv").write_text(csv_text([SDD_HEADER, *rows]))
    tags = [
        MTG_HEADER,
        [
            "track_1051200",
            "artist_000007",
            "album_000009",
            "00/1051200.mp3",
            "202.5",
            "genre---ambient",
            "mood/theme---calm",
        ],
        [
            "track_1004034",
            "artist_000008",
            "album_000010",
            "34/1004034.mp3",
            "99.0",
            "instrument---electricguitar",
        ],
    ]
    (root / "song_describer.mtg-jamendo.tsv").write_text(csv_text(tags, "\t"))
    audio = root / "audio" / "audio"  # what `unzip audio.zip -d audio` leaves
    write_audio(audio / "00" / "1051200.2min.mp3", 220)
    write_audio(audio / "34" / "1004034.2min.mp3", 330)
    write_audio(audio / "00" / "415600.2min.mp3", 440)
    write_audio(audio / "35" / "1004035.2min.mp3", 550)
    write_audio(audio / "50" / "1000050.2min.mp3", 660)  # not in the CSV
    return root
