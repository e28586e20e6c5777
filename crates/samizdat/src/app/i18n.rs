//! The app's strings: Fluent resource files (`locales/*.ftl`) embedded in the binary, one
//! bundle per language. Pages never hold text of their own; they ask for a key here.

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};

/// A language the app speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    pub fn from_code(code: &str) -> Option<Lang> {
        match code {
            "en" => Some(Lang::En),
            "ru" => Some(Lang::Ru),
            _ => None,
        }
    }

    /// The best language for an `Accept-Language` header (English when nothing matches).
    pub fn negotiate(accept_language: Option<&str>) -> Lang {
        let Some(header) = accept_language else {
            return Lang::En;
        };
        let mut ranges: Vec<(f32, &str)> = header
            .split(',')
            .filter_map(|part| {
                let mut it = part.trim().split(';');
                let tag = it.next()?.trim();
                let q = it
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (!tag.is_empty()).then_some((q, tag))
            })
            .collect();
        // Stable: equal weights keep the header's order.
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (q, tag) in ranges {
            if q <= 0.0 {
                continue;
            }
            let primary = tag
                .split(['-', '_'])
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if let Some(lang) = Lang::from_code(&primary) {
                return lang;
            }
        }
        Lang::En
    }
}

const EN: &str = include_str!("../../locales/en.ftl");
const RU: &str = include_str!("../../locales/ru.ftl");

pub struct I18n {
    en: FluentBundle<FluentResource>,
    ru: FluentBundle<FluentResource>,
}

fn bundle(lang: &str, source: &str) -> FluentBundle<FluentResource> {
    let id: unic_langid::LanguageIdentifier = lang.parse().unwrap_or_default();
    let mut bundle = FluentBundle::new_concurrent(vec![id]);
    // The pages are HTML with their own direction; Unicode isolation marks would only show
    // up as stray characters in copied text.
    bundle.set_use_isolating(false);
    // A resource with a syntax error still loads what parses; the tests refuse it.
    let resource = match FluentResource::try_new(source.to_string()) {
        Ok(r) => r,
        Err((r, _)) => r,
    };
    let _ = bundle.add_resource(resource);
    bundle
}

impl I18n {
    pub fn new() -> I18n {
        I18n {
            en: bundle("en", EN),
            ru: bundle("ru", RU),
        }
    }

    fn bundle(&self, lang: Lang) -> &FluentBundle<FluentResource> {
        match lang {
            Lang::En => &self.en,
            Lang::Ru => &self.ru,
        }
    }

    /// The text of `key`; a missing key shows as the key itself (and fails the tests).
    pub fn t(&self, lang: Lang, key: &str) -> String {
        self.format(lang, key, None)
    }

    /// The text of `key` with arguments.
    pub fn ta(&self, lang: Lang, key: &str, args: &[(&str, FluentValue<'_>)]) -> String {
        let mut fa = FluentArgs::new();
        for (k, v) in args {
            fa.set(*k, v.clone());
        }
        self.format(lang, key, Some(&fa))
    }

    fn format(&self, lang: Lang, key: &str, args: Option<&FluentArgs<'_>>) -> String {
        let bundle = self.bundle(lang);
        let Some(pattern) = bundle.get_message(key).and_then(|m| m.value()) else {
            tracing::warn!(key, lang = lang.code(), "missing app string");
            return key.to_string();
        };
        let mut errors = Vec::new();
        bundle
            .format_pattern(pattern, args, &mut errors)
            .into_owned()
    }
}

/// The message ids of a Fluent source (for the completeness tests); fails when the source
/// does not parse.
#[cfg(test)]
fn keys(source: &str) -> Result<std::collections::BTreeSet<String>, String> {
    FluentResource::try_new(source.to_string()).map_err(|(_, errors)| format!("{errors:?}"))?;
    // A message starts at column 0 with its identifier and ` =` (terms start with `-`,
    // comments with `#`, continuation lines with spaces).
    Ok(source
        .lines()
        .filter_map(|l| {
            let (id, _) = l.split_once(" =")?;
            let ok = id.starts_with(|c: char| c.is_ascii_alphabetic())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            ok.then(|| id.to_string())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn both_languages_have_every_key() {
        let en = keys(EN).expect("en.ftl parses");
        let ru = keys(RU).expect("ru.ftl parses");
        let missing_ru: Vec<_> = en.difference(&ru).collect();
        let missing_en: Vec<_> = ru.difference(&en).collect();
        assert!(missing_ru.is_empty(), "missing in ru.ftl: {missing_ru:?}");
        assert!(missing_en.is_empty(), "missing in en.ftl: {missing_en:?}");
        assert!(en.len() > 50, "the catalog is unexpectedly small");
    }

    /// Every key the app's code and script ask for exists (a typo would show the raw key).
    #[test]
    fn every_key_used_in_the_code_exists() {
        let en = keys(EN).expect("en.ftl parses");
        let code = [
            include_str!("pages.rs"),
            include_str!("web.rs"),
            include_str!("../../assets/app.js"),
        ];
        let mut used = BTreeSet::new();
        for source in code {
            // Keys are string literals passed as `tr("…")`, `t(…, "…")` or `data-i18n="…"`.
            for (i, _) in source.match_indices("\"") {
                let rest = &source[i + 1..];
                let Some(end) = rest.find('"') else { continue };
                let lit = &rest[..end];
                if en.contains(lit) {
                    used.insert(lit.to_string());
                }
            }
        }
        // Keys built at run time (a prefix and a value), listed so they are checked too.
        for key in [
            "kind-direct",
            "kind-group",
            "strength-weak",
            "strength-fair",
            "strength-strong",
        ] {
            assert!(en.contains(key), "{key} is used but missing");
        }
        for key in code_keys(&code) {
            assert!(
                en.contains(&key),
                "the code asks for {key:?}, which no .ftl defines"
            );
        }
        assert!(!used.is_empty());
    }

    /// Literals that look like keys in `t(…, "key")` / `tr("key")` calls.
    fn code_keys(code: &[&str]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for source in code {
            for marker in ["tr(\"", "t(lang, \"", "ta(lang, \""] {
                for (i, _) in source.match_indices(marker) {
                    let rest = &source[i + marker.len()..];
                    if let Some(end) = rest.find('"') {
                        out.insert(rest[..end].to_string());
                    }
                }
            }
        }
        out
    }

    #[test]
    fn russian_plurals_follow_russian_rules() {
        let i = I18n::new();
        let n = |c: i64| i.ta(Lang::Ru, "chat-unread", &[("count", c.into())]);
        assert_eq!(n(1), "1 непрочитанное сообщение");
        assert_eq!(n(3), "3 непрочитанных сообщения");
        assert_eq!(n(5), "5 непрочитанных сообщений");
        assert_eq!(n(21), "21 непрочитанное сообщение");
        let e = i.ta(Lang::En, "chat-unread", &[("count", 1.into())]);
        assert_eq!(e, "1 unread message");
    }

    #[test]
    fn accept_language_picks_russian_or_english() {
        assert_eq!(Lang::negotiate(Some("ru-RU,ru;q=0.9,en;q=0.8")), Lang::Ru);
        assert_eq!(Lang::negotiate(Some("de-DE, en;q=0.5, ru;q=0.7")), Lang::Ru);
        assert_eq!(Lang::negotiate(Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(Lang::negotiate(Some("fr")), Lang::En);
        assert_eq!(Lang::negotiate(Some("ru;q=0")), Lang::En);
        assert_eq!(Lang::negotiate(None), Lang::En);
    }
}
