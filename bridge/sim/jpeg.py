"""A small baseline JPEG encoder in pure Python, for the simulated NVR's snapshots.

A picture is described block by block: each 8x8 block of each component (Y, Cb, Cr, no
chroma subsampling) is a flat level (an ``int``) or 64 samples (a ``tuple``, row by row).
The entropy code of a block's AC coefficients depends on its samples alone, so it is
computed once per distinct block and cached; encoding a picture is then the DC
differences and a join of cached bit strings, about a millisecond for 320x180. The
tables are the standard ones of ITU T.81 Annex K (quality 75), as libjpeg writes them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

Block = int | tuple[int, ...]
# One block of the picture: its Y, Cb and Cr blocks.
BlockTriple = tuple[Block, Block, Block]

BLOCK = 8
QUALITY = 75
MAX_DC_DIFF = 2047
MAX_AC = 1023
LUMA, CHROMA = 0, 1

# The zigzag order: the natural (row-major) index of the k-th coefficient.
ZIGZAG: tuple[int, ...] = tuple(
    row * BLOCK + (diagonal - row)
    for diagonal in range(2 * BLOCK - 1)
    for row in (range(BLOCK) if diagonal % 2 else reversed(range(BLOCK)))
    if 0 <= diagonal - row < BLOCK
)

# Annex K.1 quantization tables, natural order, for quality 50.
_BASE_QUANT = (
    (
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ),
    (
        17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
        24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
        *(99,) * 32,
    ),
)  # fmt: skip

# Annex K.3 Huffman tables: (code counts per length 1..16, symbols), as hex.
_HUFFMAN_SPECS = {
    (0, LUMA): ("00010501010101010100000000000000", "000102030405060708090a0b"),
    (0, CHROMA): ("00030101010101010101010000000000", "000102030405060708090a0b"),
    (1, LUMA): (
        "0002010303020403050504040000017d",
        "01020300041105122131410613516107227114328191a1082342b1c11552d1f0243362728209"
        "0a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465"
        "666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9"
        "aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9ea"
        "f1f2f3f4f5f6f7f8f9fa",
    ),
    (1, CHROMA): (
        "00020102040403040705040400010277",
        "000102031104052131061241510761711322328108144291a1b1c109233352f0156272d10a16"
        "2434e125f11718191a262728292a35363738393a434445464748494a535455565758595a6364"
        "65666768696a737475767778797a82838485868788898a92939495969798999aa2a3a4a5a6a7"
        "a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9"
        "eaf2f3f4f5f6f7f8f9fa",
    ),
}


@dataclass(frozen=True, slots=True)
class BlockPicture:
    """A picture as rows of blocks: ``ceil(width/8) * ceil(height/8)`` triples, row-major."""

    width: int
    height: int
    blocks: Sequence[BlockTriple]


def rgb_to_ycbcr(red: int, green: int, blue: int) -> tuple[int, int, int]:
    """The JFIF YCbCr levels of an RGB colour."""
    y = 0.299 * red + 0.587 * green + 0.114 * blue
    cb = 128 - 0.168736 * red - 0.331264 * green + 0.5 * blue
    cr = 128 + 0.5 * red - 0.418688 * green - 0.081312 * blue
    return _level(y), _level(cb), _level(cr)


def _level(value: float) -> int:
    return min(255, max(0, round(value)))


def _quant_table(base: Sequence[int], quality: int) -> tuple[int, ...]:
    """A base table scaled for ``quality`` as libjpeg does (natural order)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(min(255, max(1, (q * scale + 50) // 100)) for q in base)


QUANT = (_quant_table(_BASE_QUANT[LUMA], QUALITY), _quant_table(_BASE_QUANT[CHROMA], QUALITY))


def _huffman_codes(counts: bytes, symbols: bytes) -> dict[int, str]:
    """The canonical Huffman code (as a bit string) of each symbol."""
    codes: dict[int, str] = {}
    code, index = 0, 0
    for length, count in enumerate(counts, start=1):
        for _ in range(count):
            codes[symbols[index]] = format(code, f"0{length}b")
            code += 1
            index += 1
        code <<= 1
    return codes


def _spec(table_class: int, table: int) -> tuple[bytes, bytes]:
    counts, symbols = _HUFFMAN_SPECS[table_class, table]
    return bytes.fromhex(counts), bytes.fromhex(symbols)


_DC_CODES = [_huffman_codes(*_spec(0, t)) for t in (LUMA, CHROMA)]
_AC_CODES = [_huffman_codes(*_spec(1, t)) for t in (LUMA, CHROMA)]


def _magnitude_bits(value: int) -> tuple[int, str]:
    """The size category of a coefficient and its appended bits (T.81 F.1.2.1)."""
    if value == 0:
        return 0, ""
    size = abs(value).bit_length()
    extra = value if value > 0 else value + (1 << size) - 1
    return size, format(extra, f"0{size}b")


def _dc_diff_codes(table: int) -> tuple[str, ...]:
    """The full code of every DC difference, indexed by ``diff + MAX_DC_DIFF``."""
    codes = []
    for diff in range(-MAX_DC_DIFF, MAX_DC_DIFF + 1):
        size, extra = _magnitude_bits(diff)
        codes.append(_DC_CODES[table][size] + extra)
    return tuple(codes)


_DC_DIFFS = (_dc_diff_codes(LUMA), _dc_diff_codes(CHROMA))

# cos((2x+1)u pi/16) scaled by C(u)/2: the 1-D DCT as a matrix, rows u, columns x.
_DCT = tuple(
    tuple(
        (math.sqrt(0.5) if u == 0 else 1.0) / 2 * math.cos((2 * x + 1) * u * math.pi / 16)
        for x in range(BLOCK)
    )
    for u in range(BLOCK)
)


def _dct(samples: Sequence[int]) -> list[float]:
    """The 2-D DCT of 64 level-shifted samples (row-major in, row-major out)."""
    shifted = [s - 128 for s in samples]
    rows = [
        [sum(shifted[y * BLOCK + x] * _DCT[u][x] for x in range(BLOCK)) for u in range(BLOCK)]
        for y in range(BLOCK)
    ]
    return [
        sum(_DCT[v][y] * rows[y][u] for y in range(BLOCK))
        for v in range(BLOCK)
        for u in range(BLOCK)
    ]


def _ac_bits(table: int, zigzag: Sequence[int]) -> str:
    """The run-length Huffman code of the 63 AC coefficients (zigzag order)."""
    codes = _AC_CODES[table]
    parts: list[str] = []
    run = 0
    for coefficient in zigzag[1:]:
        if coefficient == 0:
            run += 1
            continue
        while run > 15:
            parts.append(codes[0xF0])
            run -= 16
        size, extra = _magnitude_bits(coefficient)
        parts.append(codes[run << 4 | size] + extra)
        run = 0
    if run:
        parts.append(codes[0x00])
    return "".join(parts)


@lru_cache(maxsize=8192)
def _coded_block(table: int, block: Block) -> tuple[int, str]:
    """``(quantized DC, AC bit string)`` of one block; cached, as pictures repeat blocks."""
    quant = QUANT[table]
    if isinstance(block, int):
        # A flat block has only a DC coefficient: 8 times its level-shifted value.
        return round(8 * (block - 128) / quant[0]), _AC_CODES[table][0x00]
    if len(block) != BLOCK * BLOCK:
        raise ValueError(f"a block has 64 samples, not {len(block)}")
    coefficients = _dct(block)
    zigzag = [max(-MAX_AC, min(MAX_AC, round(coefficients[i] / quant[i]))) for i in ZIGZAG]
    return zigzag[0], _ac_bits(table, zigzag)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


@lru_cache(maxsize=16)
def _header(width: int, height: int) -> bytes:
    """Everything before the entropy-coded data: SOI, JFIF, tables, frame and scan headers."""
    jfif = b"JFIF\x00\x01\x01\x00" + struct.pack(">HH", 1, 1) + b"\x00\x00"
    tables = b"".join(
        bytes([table]) + bytes(QUANT[table][i] for i in ZIGZAG) for table in (LUMA, CHROMA)
    )
    frame = struct.pack(">BHHB", 8, height, width, 3) + bytes(
        [1, 0x11, LUMA, 2, 0x11, CHROMA, 3, 0x11, CHROMA]
    )
    huffman = b"".join(
        bytes([table_class << 4 | table]) + counts + symbols
        for (table_class, table) in _HUFFMAN_SPECS
        for counts, symbols in [_spec(table_class, table)]
    )
    scan = bytes([3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0])
    return (
        b"\xff\xd8"
        + _segment(0xE0, jfif)
        + _segment(0xDB, tables)
        + _segment(0xC0, frame)
        + _segment(0xC4, huffman)
        + _segment(0xDA, scan)
    )


def encode(picture: BlockPicture) -> bytes:
    """The baseline JPEG file of ``picture``."""
    width, height = picture.width, picture.height
    if not (0 < width <= 65535 and 0 < height <= 65535):
        raise ValueError(f"a JPEG is 1..65535 pixels each way, not {width}x{height}")
    columns, rows = -(-width // BLOCK), -(-height // BLOCK)
    if len(picture.blocks) != columns * rows:
        raise ValueError(f"{width}x{height} takes {columns * rows} blocks")
    parts: list[str] = []
    append = parts.append
    previous = [0, 0, 0]
    tables = (LUMA, CHROMA, CHROMA)
    for triple in picture.blocks:
        for component in (0, 1, 2):
            table = tables[component]
            dc, ac = _coded_block(table, triple[component])
            append(_DC_DIFFS[table][dc - previous[component] + MAX_DC_DIFF])
            append(ac)
            previous[component] = dc
    bits = "".join(parts)
    bits += "1" * (-len(bits) % 8)  # pad the last byte with 1-bits (T.81 F.1.2.3)
    data = int(bits, 2).to_bytes(len(bits) // 8, "big").replace(b"\xff", b"\xff\x00")
    return _header(width, height) + data + b"\xff\xd9"
