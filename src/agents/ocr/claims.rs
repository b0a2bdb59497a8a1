//! The applicant's claim against the zone: which fields disagree.
//!
//! Names are compared as ICAO 9303 would print them (case, accents and fillers do not
//! count); dates and document numbers exactly.

use chrono::Datelike;

use crate::domain::Claimed;

/// Claimed fields that disagree with the zone, by name.
pub(super) fn mismatches(zone: &mrz::MrzData, claimed: &Claimed) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if let Some(surname) = &claimed.surname
        && !names_match(surname, &zone.surname)
    {
        fields.push("surname");
    }
    if let Some(given) = &claimed.given_names
        && !names_match(given, &zone.given_names)
    {
        fields.push("given_names");
    }
    if let Some(birth) = claimed.date_of_birth {
        let read = zone.date_of_birth.calendar();
        if read
            .is_none_or(|d| (d.year, d.month, d.day) != (birth.year(), birth.month(), birth.day()))
        {
            fields.push("date_of_birth");
        }
    }
    if let Some(number) = &claimed.document_number {
        let read = zone
            .document_number_full
            .as_ref()
            .unwrap_or(&zone.document_number);
        if alphanumeric(number) != alphanumeric(read) {
            fields.push("document_number");
        }
    }
    fields
}

/// Whether a claimed name is the zone's name: compared as ICAO would print it (any of its
/// transliterations of accented letters), ignoring case and fillers. A zone's name field is
/// truncated when the name is long, so a claimed name that starts with a long zone name matches.
fn names_match(claimed: &str, zone: &str) -> bool {
    // No check digit covers a name, so a digit misread for a letter stays in the reading;
    // names hold no digits, so fold each back to its look-alike to compare.
    let folded: String = zone
        .chars()
        .map(|c| match c {
            '0' => 'O',
            '1' => 'I',
            '5' => 'S',
            '8' => 'B',
            c => c,
        })
        .collect();
    let zone = words(&folded);
    [
        mrz::TransliterationStyle::Expanded,
        mrz::TransliterationStyle::Simple,
        mrz::TransliterationStyle::XxSuffix,
    ]
    .iter()
    .map(|&style| words(&mrz::transliterate(&claimed.to_uppercase(), style)))
    .any(|claimed| claimed == zone || (zone.len() >= 20 && claimed.starts_with(&zone)))
}

/// Upper-case letters in single-space-separated words: fillers, hyphens and apostrophes are
/// word breaks, as in the zone.
fn words(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn alphanumeric(value: &str) -> String {
    value
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}
