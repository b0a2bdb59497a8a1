//! The applicant's claim against the zone: which fields disagree.
//!
//! Names are compared as ICAO 9303 would print them (case, accents and fillers do not
//! count); dates and document numbers exactly.

use chrono::Datelike;

use crate::domain::Claimed;

/// Claimed fields that disagree with the zone, by name.
pub(super) fn mismatches(zone: &mrz::MrzData, claimed: &Claimed) -> Vec<&'static str> {
    let mut fields = Vec::new();
    // The name field holds the surname, `<<`, then the given names; a name that does not fit
    // is cut at the field's end, so the part that reaches it may be a truncated name.
    let capacity = match zone.format {
        mrz::Format::Td1 => 30,
        mrz::Format::Td2 | mrz::Format::MrvB => 31,
        _ => 39,
    };
    let printed = zone.surname.len() + 2 + zone.given_names.len();
    let cut = printed >= capacity;
    if let Some(surname) = &claimed.surname
        && !names_match(surname, &zone.surname, cut && zone.given_names.is_empty())
    {
        fields.push("surname");
    }
    if let Some(given) = &claimed.given_names
        && !names_match(given, &zone.given_names, cut)
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
/// transliterations of accented letters), ignoring case and fillers. When the zone's name ran
/// to the end of its field (`cut`), a claimed name that starts with it matches.
fn names_match(claimed: &str, zone: &str, cut: bool) -> bool {
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
    .any(|claimed| claimed == zone || (cut && !zone.is_empty() && claimed.starts_with(&zone)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_as_icao_prints_them() {
        assert!(names_match("Anna María", "ANNA MARIA", false));
        assert!(names_match("Müller", "MUELLER", false));
        assert!(names_match("Müller", "MULLER", false));
        assert!(names_match("O'Brien-Smith", "O BRIEN SMITH", false));
        // A digit read for a letter in a name that no check digit covers.
        assert!(names_match("Eriksson", "ERIK5SON", false));
        assert!(!names_match("Erikson", "ERIKSSON", false));
    }

    #[test]
    fn a_name_cut_at_the_end_of_its_field_matches_its_longer_form_only_then() {
        assert!(names_match("Maria Guadalupe", "MARIA G", true));
        assert!(!names_match("Maria Guadalupe", "MARIA G", false));
        assert!(!names_match("Maria", "MARIA GUADALUPE", true));
    }
}
