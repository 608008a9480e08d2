#!/usr/bin/env python3
"""The fastest shape of a `consume --pipe` worker in Python: ack every entry.

Reads stdin in blocks and flushes its answers only when no more input is
waiting, so a burst of entries costs one write, not one per entry. Used by
`streamkeeper bench consume --pipe 'python3 examples/python-worker/ack_all.py'`.
"""

import os
import sys


def main():
    fd = sys.stdin.fileno()
    out = sys.stdout.buffer
    rest = b""
    while True:
        block = os.read(fd, 1 << 16)
        if not block:
            break
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            # {"stream":"…","id":"<ID>",…}: the ID follows the first "id":"
            start = line.find(b'"id":"') + 6
            out.write(b"ack " + line[start:line.index(b'"', start)] + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
