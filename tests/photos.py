"""Photos built in the tests: every format Eco² takes, carrying every metadata container Pillow
(and pillow-heif) can write, HEIC/AVIF bombs, and the checks that a prepared photo is pixels
only."""

from __future__ import annotations

import io
import struct

from PIL import ExifTags, Image, ImageCms, PngImagePlugin

import scans.images  # noqa: F401  (registers the HEIC/HEIF plugin, as the app does)

CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "AVIF": "image/avif",
    "HEIF": "image/heic",
}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "AVIF": "avif"}
EXTENSIONS["HEIF"] = "heic"

# the containers each format can carry, as written by Pillow / pillow-heif (or by hand below)
CONTAINERS = {
    "JPEG": ("exif", "gps", "xmp", "icc", "iptc", "comment"),
    "PNG": ("exif", "xmp", "icc", "text", "ztxt", "itxt"),
    "GIF": ("comment", "xmp", "application"),
    "WEBP": ("exif", "xmp", "icc"),
    "AVIF": ("exif", "xmp", "icc"),
    "HEIF": ("exif", "xmp", "icc"),
}
METADATA_CASES = [(fmt, container) for fmt, names in CONTAINERS.items() for container in names]


def marker(container: str) -> bytes:
    return f"ECO2-SECRET-{container.upper()}-7D1F".encode()


def to_bytes(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def photo_bytes(fmt: str = "JPEG", size=(64, 48), color=(30, 140, 80), **params) -> bytes:
    return to_bytes(Image.new("RGB", size, color), fmt, **params)


def textured_photo_bytes(fmt: str, size=(160, 120)) -> bytes:
    """A photo whose coded pixels take most of the file (a flat one codes to a few bytes)."""
    noise = Image.merge("RGB", [Image.effect_noise(size, sigma) for sigma in (40, 60, 80)])
    return to_bytes(noise, fmt)


# --- metadata containers ------------------------------------------------------------------
def icc_profile(text: bytes = b"", *, swap_red_and_blue: bool = False) -> bytes:
    """An ICC profile (lcms's sRGB) with ``text`` in a private tag; with ``swap_red_and_blue``
    its red and blue primaries trade places, so (200, 30, 30) in it is a blue in sRGB."""
    data = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    count = struct.unpack(">I", data[128:132])[0]
    tags = [struct.unpack(">4sII", data[132 + 12 * i : 144 + 12 * i]) for i in range(count)]
    if swap_red_and_blue:
        where = {sig: (offset, size) for sig, offset, size in tags}
        swap = {b"rXYZ": b"bXYZ", b"bXYZ": b"rXYZ"}
        tags = [(sig, *where[swap.get(sig, sig)]) for sig, _offset, _size in tags]
    body = data[132 + 12 * count :]  # the tags' data, after the tag table
    new_count = count + bool(text)
    tags = [(sig, offset + 12 * (new_count - count), size) for sig, offset, size in tags]
    if text:
        body += b"\x00" * (-len(body) % 4)
        tags.append((b"eco2", 132 + 12 * new_count + len(body), 9 + len(text)))
        body += b"text\x00\x00\x00\x00" + text + b"\x00"
    header = data[4:84] + bytes(16) + data[100:128]  # no profile ID: it would not match
    table = struct.pack(">I", new_count) + b"".join(struct.pack(">4sII", *tag) for tag in tags)
    size = 4 + len(header) + len(table) + len(body)
    return struct.pack(">I", size) + header + table + body


def exif_with(text: bytes, *, gps: bool = False) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = text.decode()
    if gps:
        info = exif.get_ifd(ExifTags.IFD.GPSInfo)
        info[ExifTags.GPS.GPSLatitudeRef] = "N"
        info[ExifTags.GPS.GPSLatitude] = (37.0, 33.0, 59.0)
        info[ExifTags.GPS.GPSProcessingMethod] = text
    return exif


def xmp_packet(text: bytes) -> bytes:
    return (
        b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="'
        + text
        + b'"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )


def iptc_segment(text: bytes) -> bytes:
    """A JPEG APP13 "Photoshop 3.0" segment with an IPTC caption (2:120)."""
    record = b"\x1c\x02\x78" + struct.pack(">H", len(text)) + text
    record += b"\x00" * (len(record) % 2)
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(record)) + record
    payload = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def gif_extension(label: int, identifier: bytes, data: bytes) -> bytes:
    blocks = b"".join(
        bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255)
    )
    return b"\x21" + bytes([label]) + bytes([len(identifier)]) + identifier + blocks + b"\x00"


def with_gif_extension(gif: bytes, extension: bytes) -> bytes:
    """``extension`` placed after the header and global colour table, before the image."""
    flags = gif[10]
    table = 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0
    return gif[: 13 + table] + extension + gif[13 + table :]


def photo_with_metadata(fmt: str, container: str, text: bytes) -> bytes:
    """A small photo in ``fmt`` whose ``container`` holds ``text``."""
    image = Image.new("RGB", (96, 64), (30, 140, 80))
    if container in ("exif", "gps"):
        return to_bytes(image, fmt, exif=exif_with(text, gps=container == "gps"))
    if container == "icc":
        return to_bytes(image, fmt, icc_profile=icc_profile(text))
    if container == "comment":
        return to_bytes(image, fmt, comment=text)
    if container == "iptc":
        return to_bytes(image, fmt, extra=iptc_segment(text))
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        if container == "xmp":
            info.add_itxt("XML:com.adobe.xmp", xmp_packet(text).decode())
        elif container == "text":
            info.add_text("Comment", text.decode())
        elif container == "ztxt":
            info.add_text("Description", text.decode(), zip=True)
        elif container == "itxt":
            info.add_itxt("Author", text.decode(), lang="ko", tkey="저자", zip=False)
        return to_bytes(image, fmt, pnginfo=info)
    if fmt == "GIF":
        gif = to_bytes(image, fmt)
        if container == "xmp":
            return with_gif_extension(gif, gif_extension(0xFF, b"XMP DataXMP", xmp_packet(text)))
        return with_gif_extension(gif, gif_extension(0xFF, b"ECO2TEST1.0", text))
    if container == "xmp":
        return to_bytes(image, fmt, xmp=xmp_packet(text))
    raise ValueError(f"no {container} in {fmt}")


def carries(data: bytes, text: bytes) -> bool:
    """``text`` is in the file, as bytes or in what Pillow reads of it (compressed chunks)."""
    if text in data:
        return True
    with Image.open(io.BytesIO(data)) as image:
        values = [*image.info.values(), image.info.get("icc_profile", b"")]
    return any(text in (v.encode() if isinstance(v, str) else v) for v in values if v)


# --- what a prepared photo may contain ----------------------------------------------------
# SOI, APP0 (the JFIF header: version, density), DQT, SOF0/SOF2, DHT, SOS
PIXEL_SEGMENTS = {0xD8, 0xE0, 0xDB, 0xC0, 0xC2, 0xC4, 0xDA}


def jpeg_segments(data: bytes) -> list[int]:
    """The markers of a JPEG's segments, up to the start of its scan data."""
    assert data[:2] == b"\xff\xd8"
    markers, offset = [0xD8], 2
    while offset < len(data):
        assert data[offset] == 0xFF, f"not a marker at {offset}"
        kind = data[offset + 1]
        markers.append(kind)
        if kind == 0xDA:
            return markers
        offset += 2 + struct.unpack(">H", data[offset + 2 : offset + 4])[0]
    return markers


def assert_pixels_only(data: bytes, *texts: bytes) -> None:
    """``data`` is a JPEG with pixels and the JFIF header, nothing else."""
    for text in texts:
        assert text not in data
    for signature in (b"Exif", b"acsp", b"ns.adobe.com", b"Photoshop", b"8BIM", b"xmpmeta"):
        assert signature not in data, signature
    assert set(jpeg_segments(data)) <= PIXEL_SEGMENTS, [hex(m) for m in jpeg_segments(data)]
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert set(image.info) <= {"jfif", "jfif_version", "jfif_unit", "jfif_density"}, image.info
        assert dict(image.getexif()) == {}  # (getxmp() reads info["xmp"], checked above)
        assert image.app == {"APP0": image.app["APP0"]}
        assert image.app["APP0"].startswith(b"JFIF\x00")


# --- bombs and damaged files --------------------------------------------------------------
def declaring_size(data: bytes, width: int, height: int) -> bytes:
    """A HEIF/AVIF file whose `ispe` box (the declared size) says width × height."""
    found = data.find(b"ispe")
    assert found > 0
    return data[: found + 8] + struct.pack(">II", width, height) + data[found + 16 :]


def with_damaged_pixels(data: bytes) -> bytes:
    """A HEIF/AVIF file whose headers are intact and whose coded pixels are garbage."""
    start = data.find(b"mdat") + 4
    damaged = bytearray(data)
    for i in range(start, min(len(data), start + 200)):
        damaged[i] = (damaged[i] * 7 + 13) & 0xFF
    return bytes(damaged)
