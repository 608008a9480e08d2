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

Tracing: when the entry carries W3C trace context (a producer wrote a
`traceparent` field), the line has a `traceparent` key naming this run's
span (the consumer's `process` span, exported with --otlp-endpoint). The
worker logs its trace id with every line about the entry, so its logs join
the trace; with the OpenTelemetry SDK installed, continue it with
`TraceContextTextMapPropagator().extract({"traceparent": tp})`.
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


def trace_of(entry):
    """(trace id, span id) of the run's W3C traceparent, or None."""
    parts = str(entry.get("traceparent", "")).split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    return parts[1], parts[2]


def log(trace, text):
    """A log line on stderr, with the trace it belongs to."""
    where = f"trace_id={trace[0]} span_id={trace[1]} " if trace else ""
    print(f"{where}{text}", file=sys.stderr, flush=True)


def handle(fields, trace):
    """The work. Return to ack; raise to say otherwise."""
    n = int(fields["n"])  # ValueError: a failed attempt
    if n < 0:
        raise Poison(f"negative n ({n}) can never be processed")
    log(trace, f"{n} squared is {n * n}")


def answer(entry):
    eid = entry["id"]
    try:
        handle(fields_of(entry), trace_of(entry))
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
