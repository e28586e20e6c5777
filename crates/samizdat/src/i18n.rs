//! The app's and the CLI's strings: Fluent resource files (`locales/*.ftl`) embedded in the
//! binary, one bundle per language. Pages never hold text of their own; they ask for a key
//! here. What the core reports as data ([`Notice`], [`ConvStatus`], [`Problem`]) is turned
//! into a sentence here too, for both fronts: the CLI in English, the app in its reader's
//! language.

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use samizdat_core::{ConvStatus, Event, Notice, Problem, Refusal};
use serde_json::Value;

include!(concat!(env!("OUT_DIR"), "/locales.rs"));

/// A language the app speaks: one of the files in `locales/` (see `build.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lang(usize);

impl Lang {
    /// English: the fallback, and the CLI's language.
    pub const EN: Lang = Lang(0);

    /// Every language, English first.
    pub fn all() -> impl Iterator<Item = Lang> {
        (0..LOCALES.len()).map(Lang)
    }

    pub fn code(self) -> &'static str {
        LOCALES[self.0].0
    }

    pub fn from_code(code: &str) -> Option<Lang> {
        LOCALES.iter().position(|(c, _)| *c == code).map(Lang)
    }

    /// The best language for an `Accept-Language` header (English when nothing matches).
    /// Not `fluent_langneg::parse_accepted_languages`: it drops the `q` weights (its docs say
    /// Fluent negotiates by order only), so `de, en;q=0.5, ru;q=0.7` would pick English and
    /// `ru;q=0` ("not Russian") would pick Russian; the weights are what browsers send.
    pub fn negotiate(accept_language: Option<&str>) -> Lang {
        let Some(header) = accept_language else {
            return Lang::EN;
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
        Lang::EN
    }
}

pub struct I18n {
    /// One bundle per language, in the order of [`LOCALES`].
    bundles: Vec<FluentBundle<FluentResource>>,
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
            bundles: LOCALES
                .iter()
                .map(|(code, source)| bundle(code, source))
                .collect(),
        }
    }

    fn bundle(&self, lang: Lang) -> &FluentBundle<FluentResource> {
        &self.bundles[lang.0]
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

/// The English strings, for the CLI (loaded once).
fn english() -> &'static I18n {
    static EN: std::sync::OnceLock<I18n> = std::sync::OnceLock::new();
    EN.get_or_init(I18n::new)
}

/// A notice as the CLI prints it: English, errors with their technical detail.
pub fn notice_en(notice: &Notice) -> String {
    english().notice(Lang::EN, notice, Errors::Detailed)
}

/// A line about a conversation (see [`I18n::line`]) as the CLI prints it.
pub fn line_en(e: &Event) -> String {
    english().line(Lang::EN, e, Errors::Detailed)
}

pub fn call_line_en(
    outgoing: bool,
    video: bool,
    group: bool,
    outcome: samizdat_core::CallOutcome,
    secs: u64,
) -> String {
    english().call_line(Lang::EN, (outgoing, video, group), outcome, secs)
}

pub fn status_en(status: &ConvStatus) -> String {
    english().status(Lang::EN, status)
}

/// How an error inside a notice is said: its kind in the reader's language (the app), or the
/// technical detail as the library or relay gave it (the CLI, whose language is English).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errors {
    Translated,
    Detailed,
}

/// A call's length as a clock shows it: `0:42`, `12:05`, `1:02:03`.
pub fn call_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// A Fluent key from a snake_case code: `notice` + `move_failed` → `notice-move-failed`.
fn key(prefix: &str, code: &str) -> String {
    format!("{prefix}-{}", code.replace('_', "-"))
}

impl I18n {
    /// A notice as a sentence: `notice-<kind>`, with each parameter as an argument.
    pub fn notice(&self, lang: Lang, notice: &Notice, errors: Errors) -> String {
        self.sentence(lang, "notice", notice, errors)
    }

    /// A line about a conversation in its chat — an event the core kept there (someone
    /// added, removed or left, a rename, the timer, a contact's devices): `line-…`.
    pub fn line(&self, lang: Lang, e: &Event, errors: Errors) -> String {
        let who = |w: &str| -> FluentValue<'static> { FluentValue::from(w.to_string()) };
        match e {
            Event::MemberAdded { who: w, .. } => {
                self.ta(lang, "line-member-added", &[("who", who(w))])
            }
            Event::MemberRemoved { who: w, .. } => {
                self.ta(lang, "line-member-removed", &[("who", who(w))])
            }
            Event::MemberLeft { who: w, .. } => {
                self.ta(lang, "line-member-left", &[("who", who(w))])
            }
            Event::GroupNamed { conversation, .. } => {
                self.ta(lang, "line-renamed", &[("name", who(conversation))])
            }
            Event::Removed { .. } => self.t(lang, "line-you-removed"),
            Event::TimerSet { who: w, secs, .. } => {
                let me = w == "me";
                match (*secs, me) {
                    (0, true) => self.t(lang, "line-timer-off-you"),
                    (0, false) => self.ta(lang, "line-timer-off", &[("who", who(w))]),
                    (s, true) => self.ta(
                        lang,
                        "line-timer-you",
                        &[("duration", self.duration(lang, s).into())],
                    ),
                    (s, false) => self.ta(
                        lang,
                        "line-timer",
                        &[("who", who(w)), ("duration", self.duration(lang, s).into())],
                    ),
                }
            }
            Event::Notice { notice, .. } => self.notice(lang, notice, errors),
            Event::CallEnded {
                outgoing,
                video,
                outcome,
                duration_secs,
                group,
                ..
            } => self.call_line(lang, (*outgoing, *video, *group), *outcome, *duration_secs),
            _ => String::new(),
        }
    }

    /// A finished call as a line in the chat: `line-call-<outcome>`, with the kind of call
    /// (`call-kind-<out|in>-<voice|video>`) and, once answered, how long it lasted.
    pub fn call_line(
        &self,
        lang: Lang,
        (outgoing, video, group): (bool, bool, bool),
        outcome: samizdat_core::CallOutcome,
        secs: u64,
    ) -> String {
        let kind = if group {
            "call-kind-group".to_string()
        } else {
            format!(
                "call-kind-{}-{}",
                if outgoing { "out" } else { "in" },
                if video { "video" } else { "voice" }
            )
        };
        let code = serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.ta(
            lang,
            &key("line-call", &code),
            &[
                ("kind", self.t(lang, &kind).into()),
                ("duration", call_duration(secs).into()),
            ],
        )
    }

    /// A timer's length in words ("1 day", "5 минут").
    pub fn duration(&self, lang: Lang, secs: u64) -> String {
        match secs {
            0 => self.t(lang, "timer-off"),
            300 => self.t(lang, "timer-5m"),
            3600 => self.t(lang, "timer-1h"),
            86_400 => self.t(lang, "timer-1d"),
            604_800 => self.t(lang, "timer-1w"),
            s => self.ta(lang, "timer-secs", &[("secs", (s as i64).into())]),
        }
    }

    /// Why a conversation no longer takes messages.
    pub fn status(&self, lang: Lang, status: &ConvStatus) -> String {
        self.sentence(lang, "status", status, Errors::Detailed)
    }

    pub fn problem(&self, lang: Lang, problem: &Problem, errors: Errors) -> String {
        match errors {
            Errors::Detailed => problem.detail.clone(),
            Errors::Translated => self.t(lang, &key("problem", problem.kind.as_str())),
        }
    }

    pub fn refusal(&self, lang: Lang, refusal: &Refusal) -> String {
        match refusal {
            // Written by the other side's client in a version this one does not know.
            Refusal::Other(text) => text.clone(),
            known => {
                let value = serde_json::to_value(known).unwrap_or(Value::Null);
                let code = value["code"].as_str().unwrap_or("");
                self.t(lang, &key("refusal", code))
            }
        }
    }

    /// One generic rendering for every kind, so a new kind needs only its Fluent messages:
    /// the value serializes as `{kind, params}` (or `{kind, ...fields}`); strings and numbers
    /// are arguments as they are, a [`Problem`] and a [`Refusal`] are said in `lang`.
    fn sentence<T: serde::Serialize>(
        &self,
        lang: Lang,
        prefix: &str,
        value: &T,
        errors: Errors,
    ) -> String {
        let Ok(Value::Object(mut map)) = serde_json::to_value(value) else {
            return String::new();
        };
        let kind = match map.remove("kind") {
            Some(Value::String(k)) => k,
            _ => return String::new(),
        };
        let params = match map.remove("params") {
            Some(Value::Object(p)) => p,
            _ => map,
        };
        let mut args = FluentArgs::new();
        for (name, v) in params {
            let arg: FluentValue<'_> = match v {
                Value::String(s) => s.into(),
                Value::Number(n) => n.as_f64().unwrap_or(0.0).into(),
                Value::Null => "".into(),
                v @ Value::Object(_) => {
                    if let Ok(p) = serde_json::from_value::<Problem>(v.clone()) {
                        self.problem(lang, &p, errors).into()
                    } else if let Ok(r) = serde_json::from_value::<Refusal>(v) {
                        self.refusal(lang, &r).into()
                    } else {
                        "".into()
                    }
                }
                other => other.to_string().into(),
            };
            args.set(name, arg);
        }
        self.format(lang, &key(prefix, &kind), Some(&args))
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

    fn ru() -> Lang {
        Lang::from_code("ru").expect("ru.ftl")
    }

    const EN: &str = LOCALES[0].1;

    /// Every language has exactly English's messages (and the build found both files).
    #[test]
    fn every_language_has_every_key() {
        assert!(
            LOCALES.len() >= 2,
            "{:?}",
            LOCALES.iter().map(|l| l.0).collect::<Vec<_>>()
        );
        let en = keys(EN).expect("en.ftl parses");
        assert!(en.len() > 50, "the catalog is unexpectedly small");
        for (code, source) in &LOCALES[1..] {
            let other = keys(source).unwrap_or_else(|e| panic!("{code}.ftl: {e}"));
            let missing: Vec<_> = en.difference(&other).collect();
            let extra: Vec<_> = other.difference(&en).collect();
            assert!(missing.is_empty(), "missing in {code}.ftl: {missing:?}");
            assert!(
                extra.is_empty(),
                "not in en.ftl but in {code}.ftl: {extra:?}"
            );
        }
    }

    /// Every key the app's code and script ask for exists (a typo would show the raw key).
    #[test]
    fn every_key_used_in_the_code_exists() {
        let en = keys(EN).expect("en.ftl parses");
        let code = [
            include_str!("app/pages.rs"),
            include_str!("app/web.rs"),
            include_str!("../assets/app.js"),
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
    fn every_call_outcome_is_a_line_in_every_language() {
        use samizdat_core::CallOutcome::{Answered, Declined};
        let i18n = I18n::new();
        for (lang, _) in LOCALES {
            let lang = Lang::from_code(lang).expect("a language");
            for outcome in samizdat_core::CallOutcome::ALL {
                for (out, video, group) in [
                    (true, false, false),
                    (false, true, false),
                    (false, false, true),
                ] {
                    let line = i18n.call_line(lang, (out, video, group), outcome, 83);
                    assert!(!line.is_empty() && !line.contains("line-call"), "{line}");
                    assert!(!line.contains('{'), "{line}");
                }
            }
        }
        assert_eq!(
            i18n.call_line(Lang::EN, (true, false, false), Answered, 83),
            "Outgoing call, 1:23"
        );
        assert_eq!(
            i18n.call_line(Lang::EN, (true, false, true), Answered, 83),
            "Group call, 1:23"
        );
        assert_eq!(
            i18n.call_line(ru(), (false, true, false), Declined, 0),
            "Входящий видеозвонок: отклонён"
        );
        assert_eq!(call_duration(3723), "1:02:03");
    }

    #[test]
    fn russian_plurals_follow_russian_rules() {
        let i = I18n::new();
        let n = |c: i64| i.ta(ru(), "chat-unread", &[("count", c.into())]);
        assert_eq!(n(1), "1 непрочитанное сообщение");
        assert_eq!(n(3), "3 непрочитанных сообщения");
        assert_eq!(n(5), "5 непрочитанных сообщений");
        assert_eq!(n(21), "21 непрочитанное сообщение");
        let e = i.ta(Lang::EN, "chat-unread", &[("count", 1.into())]);
        assert_eq!(e, "1 unread message");
    }

    #[test]
    fn accept_language_picks_russian_or_english() {
        assert_eq!(Lang::negotiate(Some("ru-RU,ru;q=0.9,en;q=0.8")), ru());
        assert_eq!(Lang::negotiate(Some("de-DE, en;q=0.5, ru;q=0.7")), ru());
        assert_eq!(Lang::negotiate(Some("en-US,en;q=0.9")), Lang::EN);
        assert_eq!(Lang::negotiate(Some("fr")), Lang::EN);
        assert_eq!(Lang::negotiate(Some("ru;q=0")), Lang::EN);
        assert_eq!(Lang::negotiate(None), Lang::EN);
    }

    /// The kinds a type serializes with (`kind` or `code` constants in its JSON schema).
    fn kinds(schema: &serde_json::Value, tag: &str, out: &mut BTreeSet<String>) {
        match schema {
            serde_json::Value::Object(map) => {
                if let Some(c) = map
                    .get("properties")
                    .and_then(|p| p.get(tag))
                    .and_then(|k| k.get("const").or_else(|| k.get("enum")))
                {
                    match c {
                        serde_json::Value::String(s) => {
                            out.insert(s.clone());
                        }
                        serde_json::Value::Array(a) => {
                            out.extend(a.iter().filter_map(|v| v.as_str().map(String::from)))
                        }
                        _ => {}
                    }
                }
                for v in map.values() {
                    kinds(v, tag, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| kinds(v, tag, out)),
            _ => {}
        }
    }

    /// Every kind the core can report has its sentence in every language: the core's notices,
    /// statuses, error kinds and refusal codes (read from their schemas, so a new kind without
    /// its messages fails here).
    #[test]
    fn every_core_kind_has_a_sentence_in_every_language() {
        let checks = [
            (
                "notice",
                serde_json::to_value(schemars::schema_for!(Notice)),
                "kind",
            ),
            (
                "status",
                serde_json::to_value(schemars::schema_for!(ConvStatus)),
                "kind",
            ),
            (
                "refusal",
                serde_json::to_value(schemars::schema_for!(Refusal)),
                "code",
            ),
        ];
        for (lang, source) in LOCALES {
            let have = keys(source).expect("parses");
            for (prefix, schema, tag) in &checks {
                let schema = schema.as_ref().expect("schema");
                let mut found = BTreeSet::new();
                kinds(schema, tag, &mut found);
                found.remove("other");
                assert!(found.len() >= 3, "{prefix}: {found:?}");
                for k in found {
                    let key = key(prefix, &k);
                    assert!(have.contains(&key), "{lang}.ftl lacks {key}");
                }
            }
            let errors = serde_json::to_value(schemars::schema_for!(samizdat_core::ErrorKind))
                .expect("schema");
            for k in errors["enum"]
                .as_array()
                .or(errors["oneOf"].as_array())
                .expect("error kinds")
            {
                let k = k
                    .as_str()
                    .or(k["const"].as_str())
                    .or(k["enum"][0].as_str())
                    .expect("a kind");
                assert!(
                    have.contains(&key("problem", k)),
                    "{lang}.ftl lacks problem-{k}"
                );
            }
        }
    }

    /// A notice with an error in it reads as one Russian sentence in Russian, and as the
    /// English sentence with the technical detail in the CLI.
    #[test]
    fn notices_are_said_in_the_readers_language() {
        let i18n = I18n::new();
        let notice = Notice::MoveFailed {
            relay: "https://relay.example".into(),
            error: Problem {
                kind: samizdat_core::ErrorKind::RelayUnreachable,
                detail: "cannot reach the relay at https://relay.example".into(),
            },
        };
        let said = i18n.notice(ru(), &notice, Errors::Translated);
        assert_eq!(
            said,
            "не удалось перейти на https://relay.example: ретранслятор недоступен"
        );
        let en = i18n.notice(Lang::EN, &notice, Errors::Detailed);
        assert_eq!(
            en,
            "could not move to https://relay.example: cannot reach the relay at https://relay.example"
        );
        let refused = Notice::InviteRefusedBy {
            name: "bob".into(),
            reason: Refusal::ReusedInvite,
        };
        assert_eq!(
            i18n.notice(ru(), &refused, Errors::Translated),
            "bob отклонил приглашение (повторное знакомство по одноразовому приглашению); попросите новую ссылку"
        );
        let plural = Notice::RevokedDeviceChangedGroup {
            who: "alice".into(),
            added: 2,
        };
        assert!(
            i18n.notice(Lang::EN, &plural, Errors::Detailed)
                .contains("it and the 2 member(s)")
        );
        assert_eq!(i18n.status(ru(), &ConvStatus::Left), "вы вышли");
    }
}
