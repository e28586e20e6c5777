//! Text that came from someone else, made safe to show (security review 3: L1, L11 and the
//! app review's impersonation findings).
//!
//! Two treatments:
//! - [`escape`] for text shown as it was written (messages, relay error messages): control,
//!   bidirectional and invisible format characters become visible escapes (`\u{202e}`), so a
//!   newline cannot forge a line, an ANSI sequence cannot colour one and U+202E cannot reverse
//!   the digits that follow.
//! - [`clean_name`] for names (display names, aliases, group names): those characters are
//!   removed, whitespace runs become one space, and the result is bounded — a name is an
//!   identity, so nothing in it may be invisible.

/// Whether `c` is a control, bidirectional-control or invisible format character (Unicode
/// general category Cc or Cf, plus the line and paragraph separators and the invisible Hangul
/// fillers that render as blanks).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
            | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{0600}'..='\u{0605}' | '\u{06DD}'
            | '\u{070F}' | '\u{110BD}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// The forms two names share when they look alike: the Unicode confusable skeleton (UTS #39,
/// through `unicode-security`) of the cleaned name, taken without case in two orders — so
/// "alice", "Alice", "аlice" (Cyrillic а), "ALICE" and "ALlCE" all look like one another.
/// Used to tell apart people whose names look the same (the app review's impersonation
/// finding); see [`look_alike`].
pub fn skeletons(name: &str) -> [String; 2] {
    use unicode_security::confusable_detection::skeleton as uts39;
    let clean = clean_name(name);
    let lower_first: String = uts39(&clean.to_lowercase()).collect();
    let skeleton_first: String = uts39(&clean).collect::<String>().to_lowercase();
    [lower_first, skeleton_first]
}

/// Whether two names (as [`skeletons`]) look alike.
pub fn look_alike(a: &[String; 2], b: &[String; 2]) -> bool {
    a[0] == b[0] || a[1] == b[1]
}

/// How many colours people are told apart by ([`hue`]).
pub const HUES: u8 = 12;

/// A person's colour (0 to [`HUES`] − 1), from their key: the same everywhere, and chosen by
/// no one.
pub fn hue(fingerprint: &[u8]) -> u8 {
    fingerprint.first().map(|b| b % HUES).unwrap_or(0)
}

/// [`is_hidden`], except the newline that ends a line of output (for checking whole outputs).
pub fn is_hidden_but_newline(c: char) -> bool {
    c != '\n' && is_hidden(c)
}

/// `s` with every hidden character (see [`is_hidden`]) replaced by its visible escape.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`escape`], cut to at most `max` characters (an ellipsis marks the cut).
pub fn escape_bounded(s: &str, max: usize) -> String {
    let mut out = escape(s);
    if let Some((i, _)) = out.char_indices().nth(max) {
        out.truncate(i);
        out.push('…');
    }
    out
}

/// The longest name kept, in characters.
pub const NAME_MAX_CHARS: usize = 64;

/// A name as it may be shown: hidden characters removed, whitespace runs made one space,
/// trimmed, at most [`NAME_MAX_CHARS`] characters. Variation selectors go too (they only
/// change how an emoji looks, and they hide well inside a name).
pub fn clean_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars().filter(|c| !is_hidden(*c) || c.is_whitespace()) {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        if out.chars().count() >= NAME_MAX_CHARS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alike_names_share_a_skeleton() {
        let alike = |a: &str, b: &str| look_alike(&skeletons(a), &skeletons(b));
        for same in ["Alice", "\u{0430}lice", "ALICE", "al\u{200B}ice", "ALlCE"] {
            assert!(alike("alice", same) || alike("ALICE", same), "{same:?}");
        }
        assert!(alike("alice", "\u{0430}lice"));
        assert!(alike("ALICE", "ALlCE"));
        assert!(alike("Pavel", "\u{0420}avel"), "Cyrillic Р");
        assert!(!alike("alice", "alina"));
        assert!(!alike("alice", "a l i c e"));
        assert!(hue(&[200, 1]) < HUES);
    }

    #[test]
    fn escape_makes_every_hidden_character_visible() {
        let s = "a\nb\x1b[32mc\u{202E}d\u{200B}e\u{2066}f";
        let e = escape(s);
        assert!(!e.chars().any(is_hidden), "{e}");
        assert_eq!(e, "a\\nb\\u{1b}[32mc\\u{202e}d\\u{200b}e\\u{2066}f");
        assert_eq!(escape("Привет, мир"), "Привет, мир");
    }

    #[test]
    fn escape_bounded_cuts_at_a_character() {
        assert_eq!(escape_bounded("ёжик", 2), "ёж…");
        assert_eq!(escape_bounded("ёжик", 4), "ёжик");
    }

    #[test]
    fn clean_name_removes_what_cannot_be_seen() {
        assert_eq!(clean_name("Al\u{200B}ice"), "Alice");
        assert_eq!(clean_name("\u{202E}ecilA"), "ecilA");
        assert_eq!(clean_name("  Bob \t\n  Smith "), "Bob Smith");
        assert_eq!(clean_name("Ал\u{00AD}иса\u{FE0F}"), "Алиса");
        assert_eq!(clean_name(&"x".repeat(200)).chars().count(), NAME_MAX_CHARS);
        assert_eq!(clean_name("\u{200B}\u{2060}"), "");
    }
}
