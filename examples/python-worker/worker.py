#!/usr/bin/env python3
"""A streamkeeper worker in Python, standard library only.

`streamkeeper consume S -g G --pipe 'python3 worker.py'` starts this once
and writes one entry per line on stdin:

    {"stream":"jobs","id":"1700000000000-0","fields":{"n":"7"}}

For each entry the worker prints one answer line on stdout (and flushes):

    ack ID               done
    retry ID [DURATION]  try again later (e.g. "retry ID 30s")
    fail ID [REASON]     a failed attempt (dead-lettered after --max-deliveries)
    dead ID REASON       dead-letter it now

Answers may come in any order; up to --concurrency entries are sent
before the first answer is due. Logs go to stderr, never to stdout.
This example squares the field `n`: a negative n is poison (dead), a
value that is not a number fails (and is retried).
"""

import json
import sys


class Poison(Exception):
    """An entry no retry can fix: dead-letter it."""


class RetryLater(Exception):
    """A temporary problem: try again after `after` (e.g. "30s")."""

    def __init__(self, after):
        super().__init__(after)
        self.after = after


def fields_of(entry):
    """The entry's fields as a dict (they come as pairs when a name repeats)."""
    fields = entry["fields"]
    if isinstance(fields, list):
        fields = dict(fields)
    # Values that are not UTF-8 arrive as {"b64": "..."}.
    return fields


def handle(fields):
    """The work. Return to ack; raise to say otherwise."""
    n = int(fields["n"])  # ValueError: a failed attempt
    if n < 0:
        raise Poison(f"negative n ({n}) can never be processed")
    print(f"{n} squared is {n * n}", file=sys.stderr, flush=True)


def answer(entry):
    eid = entry["id"]
    try:
        handle(fields_of(entry))
        return f"ack {eid}"
    except Poison as e:
        return f"dead {eid} {one_line(e)}"
    except RetryLater as e:
        return f"retry {eid} {e.after}"
    except Exception as e:  # any other error: a failed attempt
        return f"fail {eid} {type(e).__name__}: {one_line(e)}"


def one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


def main():
    for line in sys.stdin:
        print(answer(json.loads(line)), flush=True)


if __name__ == "__main__":
    main()
