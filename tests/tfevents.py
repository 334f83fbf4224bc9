"""Reads TensorBoard event files without TensorBoard or TensorFlow: the
TFRecord framing (length, masked CRC-32C of the length, data, masked CRC-32C
of the data) checked with a CRC-32C written here, then tensorboardX's
``Event`` protocol buffer."""
import glob
import os
import struct

from tensorboardX.proto import event_pb2


def _crc32c_table():
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  c = 0xFFFFFFFF
  for b in data:
    c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def masked(crc: int) -> int:
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(logdir: str) -> list:
  """Every ``Event`` of the event files directly in ``logdir``, in file order."""
  out = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      header = data[pos:pos + 8]
      (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack(
          "<I", data[pos + 8:pos + 12])
      assert masked(crc32c(header)) == length_crc, f"bad length CRC in {path}"
      body = data[pos + 12:pos + 12 + length]
      (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
      assert masked(crc32c(body)) == body_crc, f"bad data CRC in {path}"
      event = event_pb2.Event()
      event.ParseFromString(body)
      out.append(event)
      pos += 16 + length
  return out


def summaries(logdir: str) -> dict:
  """``{tag: {step: value}}``: scalars as floats, images and histograms as
  their protocol buffers."""
  out = {}
  for event in read_events(logdir):
    for v in event.summary.value:
      kind = v.WhichOneof("value")
      value = v.simple_value if kind == "simple_value" else getattr(v, kind)
      out.setdefault((v.tag, kind), {})[event.step] = value
  return out
