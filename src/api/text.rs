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

/// Format characters (general category Cf) in Unicode 15.1, as `(first, last)` ranges:
/// bidi controls, zero-width characters, the soft hyphen, invisible operators, interlinear
/// annotation, tags and the rest. None draws anything, and in a title they reorder or hide
/// what an operator reads (a bidi override makes `gpj.exe` look like `exe.jpg`).
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// True for what a title must not carry: controls (Cc), format characters (Cf) and the
/// line and paragraph separators (Zl U+2028, Zp U+2029), which break a list row in two.
pub fn is_invisible(c: char) -> bool {
    if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
        return true;
    }
    let c = c as u32;
    // FORMAT is sorted: find the last range starting at or before c.
    let i = FORMAT.partition_point(|(first, _)| *first <= c);
    i > 0 && c <= FORMAT[i - 1].1
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

    #[test]
    fn invisible_characters() {
        for c in [
            '\0',
            '\x1b',
            '\x7f',
            '\u{9b}',
            '\u{ad}',
            '\u{61c}',
            '\u{180e}',
            '\u{200b}',
            '\u{200d}',
            '\u{200e}',
            '\u{200f}',
            '\u{202a}',
            '\u{202e}',
            '\u{2028}',
            '\u{2029}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{2069}',
            '\u{feff}',
            '\u{fff9}',
            '\u{fffb}',
            '\u{e0001}',
            '\u{e0020}',
            '\u{e007f}',
        ] {
            assert!(is_invisible(c), "{:04x}", c as u32);
        }
        for c in [
            'a',
            ' ',
            'é',
            '\u{a0}',
            '\u{ac}',
            '\u{ae}',
            '\u{200a}',
            '\u{2010}',
            '\u{2027}',
            '\u{202f}',
            '\u{2065}',
            '\u{fffc}',
            '\u{fffd}',
            '\u{e0002}',
            '\u{e0080}',
            '✓',
        ] {
            assert!(!is_invisible(c), "{:04x}", c as u32);
        }
        assert!(
            FORMAT.windows(2).all(|w| w[0].1 < w[1].0),
            "sorted, disjoint"
        );
    }
}
