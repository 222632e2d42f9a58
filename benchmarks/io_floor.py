"""I/O floor for the FP8 -> BF16 rewrite benchmark (stdlib only, no imports beyond os/sys).

    python benchmarks/io_floor.py SRC DST OUT_BYTES

Reads every byte of every regular file directly in SRC (sorted by name) with
1 MiB ``readinto`` calls into one reusable buffer and, interleaved in
proportion to what has been read, writes OUT_BYTES bytes taken from that buffer
to DST/io_floor.bin with unbuffered 1 MiB writes (no fsync, like the peers:
safetensors and MLX do not fsync either). No parsing, no conversion: only the
bytes any rewrite has to move, single-threaded. (64 MiB chunks were 2-4x slower
on the 2-core VM this was written on: a chunk that does not fit in cache makes
every copy go through memory; 1 MiB was the fastest of 1/4/8/64.)
"""
import os
import sys

CHUNK = 1 << 20


def io_floor(src, dst, out_bytes):
    os.makedirs(dst, exist_ok=True)
    files = sorted(os.path.join(src, n) for n in os.listdir(src) if os.path.isfile(os.path.join(src, n)))
    in_bytes = sum(os.path.getsize(p) for p in files) or 1
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    read = written = 0
    with open(os.path.join(dst, "io_floor.bin"), "wb", buffering=0) as out:
        def catch_up(w, target):
            while w < target:
                w += out.write(mv[: min(CHUNK, target - w)])
            return w
        for p in files:
            with open(p, "rb", buffering=0) as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    read += n
                    written = catch_up(written, out_bytes * read // in_bytes)
        catch_up(written, out_bytes)


if __name__ == "__main__":
    io_floor(sys.argv[1], sys.argv[2], int(sys.argv[3]))
