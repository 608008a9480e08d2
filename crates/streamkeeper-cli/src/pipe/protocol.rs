//! The `--pipe` line protocol: what a worker may answer about an entry
//! (`ack ID`, `retry ID [DURATION]`, `fail ID [REASON]`, `dead ID REASON`),
//! how a line is parsed, and the consumer outcome each answer maps to.
//! No I/O: the supervisor and the worker both speak through it.

use std::time::Duration;

use streamkeeper::Outcome;

/// Longest answer line accepted; a longer one breaks the protocol.
pub(super) const MAX_LINE: usize = 64 * 1024;

/// What the worker (or its absence) said about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `ack ID`.
    Ack,
    /// `retry ID [DURATION]` (no duration: the consumer's backoff).
    Retry(Option<Duration>),
    /// `fail ID [REASON]`: a failed attempt.
    Fail(String),
    /// `dead ID REASON`: dead-letter now.
    Dead(String),
    /// The line about this entry did not follow the protocol.
    Malformed(String),
    /// The worker ended during this entry's lone run (it is the cause).
    CutOff(String),
    /// No answer within `--timeout`.
    TimedOut(Duration),
    /// Not this entry's fault and not run to the end: the consumer is
    /// stopping (no answer within the stop timeout) or the command cannot
    /// start. The entry is released: left pending, no attempt counted.
    Released(String),
}

/// Turns an answer into the consumer's outcome: `Err` is a failed attempt
/// (retried with the group's backoff, dead-lettered with the error as the
/// reason's end when it was the `--max-deliveries`-th).
///
/// The pipe consumer runs in manual-ack mode (see [`Pipe::handle`]), so
/// `Outcome::Ack` only settles the handler call: the entry is acked when
/// the worker said `ack`, and left pending when it was released.
pub fn outcome(answer: Answer) -> Result<Outcome, String> {
    match answer {
        Answer::Ack | Answer::Released(_) => Ok(Outcome::Ack),
        Answer::Retry(after) => Ok(Outcome::Retry { after }),
        Answer::Dead(reason) => Ok(Outcome::DeadLetter { reason }),
        // The worker's own words.
        Answer::Fail(reason) => Err(reason),
        Answer::Malformed(why) => Err(format!("malformed answer: {why}")),
        Answer::CutOff(why) => Err(format!("the worker ended during its run: {why}")),
        Answer::TimedOut(after) => Err(format!(
            "timed out after {}",
            humantime::format_duration(after)
        )),
    }
}

/// One answer line, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line<'a> {
    /// An empty line: ignored.
    Blank,
    /// A line about entry `.0` (the answer may be [`Answer::Malformed`]).
    About(&'a str, Answer),
    /// A line that names no entry.
    NoId,
}

pub(super) fn parse_line(line: &str) -> Line<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Line::Blank;
    }
    let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Line::NoId;
    }
    let (id, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let tail = tail.trim();
    let answer = match verb {
        "ack" if tail.is_empty() => Answer::Ack,
        "ack" => Answer::Malformed(format!("`ack ID` takes nothing after the ID: {line:?}")),
        "retry" if tail.is_empty() => Answer::Retry(None),
        "retry" => match humantime::parse_duration(tail) {
            Ok(d) => Answer::Retry(Some(d)),
            Err(e) => Answer::Malformed(format!("bad retry delay in {line:?}: {e}")),
        },
        "fail" if tail.is_empty() => Answer::Fail("no reason given".into()),
        "fail" => Answer::Fail(tail.to_string()),
        "dead" if tail.is_empty() => {
            Answer::Malformed(format!("`dead ID REASON` needs a reason: {line:?}"))
        }
        "dead" => Answer::Dead(tail.to_string()),
        _ => Answer::Malformed(format!(
            "unknown answer {verb:?} (use ack, retry, fail or dead): {line:?}"
        )),
    };
    Line::About(id, answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_lines_parse_by_the_protocol() {
        let about = |l| match parse_line(l) {
            Line::About(id, a) => (id.to_string(), a),
            other => panic!("{l:?} parsed as {other:?}"),
        };
        assert_eq!(about("ack 1-0"), ("1-0".into(), Answer::Ack));
        assert_eq!(about("ack 1-0\r\n"), ("1-0".into(), Answer::Ack));
        assert_eq!(about("retry 1-0"), ("1-0".into(), Answer::Retry(None)));
        assert_eq!(
            about("retry 1-0 250ms"),
            (
                "1-0".into(),
                Answer::Retry(Some(Duration::from_millis(250)))
            )
        );
        assert_eq!(
            about("fail 2-1 timed out after 3 s"),
            ("2-1".into(), Answer::Fail("timed out after 3 s".into()))
        );
        assert_eq!(
            about("dead 2-1 bad payload"),
            ("2-1".into(), Answer::Dead("bad payload".into()))
        );
        for bad in ["retry 1-0 soon", "dead 1-0", "ack 1-0 extra", "done 1-0"] {
            assert!(matches!(about(bad).1, Answer::Malformed(_)), "{bad}");
        }
        assert_eq!(parse_line("   "), Line::Blank);
        assert_eq!(parse_line("ack"), Line::NoId);
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert_eq!(outcome(Answer::Ack), Ok(Outcome::Ack));
        assert_eq!(
            outcome(Answer::Retry(None)),
            Ok(Outcome::Retry { after: None })
        );
        assert_eq!(
            outcome(Answer::Retry(Some(Duration::from_millis(5)))),
            Ok(Outcome::Retry {
                after: Some(Duration::from_millis(5))
            })
        );
        assert_eq!(
            outcome(Answer::Dead("x".into())),
            Ok(Outcome::DeadLetter { reason: "x".into() })
        );
        for failed in [
            Answer::Fail("x".into()),
            Answer::Malformed("x".into()),
            Answer::CutOff("x".into()),
        ] {
            assert!(outcome(failed).is_err());
        }
    }
}
