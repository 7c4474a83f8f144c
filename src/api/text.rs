//! Text from peers made safe to show: in a log line, an error message or the text table,
//! where an escape sequence would act on the terminal that shows it.

/// Makes `s` safe to print on a terminal: C0 controls and DEL become `\xNN`, C1 controls
/// become `\u{00NN}`. Anything that reaches a log, an error message or the text table may
/// come from a client, and ESC or CSI (U+009B, which some terminals honour) in it could
/// otherwise move the cursor, rewrite the title or forge log lines.
pub fn escape_control(s: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write as _;

    let is_control = |c: char| matches!(c, '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}');
    let Some(first) = s.find(is_control) else {
        return std::borrow::Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if !is_control(c) {
            out.push(c);
        } else if c <= '\x7f' {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn plain_text_is_borrowed() {
        for s in [
            "",
            "abc",
            "héllo wörld ✓",
            "tab-free \\x1b literal",
            "\u{a0}\u{ff}",
        ] {
            assert!(
                matches!(escape_control(s), Cow::Borrowed(b) if b == s),
                "{s:?}"
            );
        }
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_control("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape_control("\0\t\n\r\x7f"), "\\x00\\x09\\x0a\\x0d\\x7f");
        assert_eq!(escape_control("x\u{9b}31m\u{80}"), "x\\u{009b}31m\\u{0080}");
        assert_eq!(escape_control("é\x07ü"), "é\\x07ü");
        assert!(matches!(escape_control("\x1b"), Cow::Owned(_)));
    }

    #[test]
    fn nothing_escaped_contains_a_control() {
        let all: String = (0u32..0x200).filter_map(char::from_u32).collect();
        let out = escape_control(&all);
        assert!(
            !out.chars()
                .any(|c| c.is_control() || ('\u{80}'..='\u{9f}').contains(&c)),
            "{out:?}"
        );
        // Everything that is not a control survives unchanged and in order.
        let kept: String = all.chars().filter(|c| !c.is_control()).collect();
        let out_kept: String = out.chars().filter(|c| !c.is_ascii()).collect();
        assert_eq!(
            out_kept,
            kept.chars().filter(|c| !c.is_ascii()).collect::<String>()
        );
    }
}
