//! Why a quote left offers out, in words a consumer can act on: what the excluded offers were
//! (their categories, models, zones, prices, free units) and which option widens the search.
//! Issue 17: "excluded: 4 category" said neither.

use std::collections::BTreeMap;

use suanli_api as api;

use crate::cli::price;

/// Where the request came from, for naming what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `suanli quote` options.
    Flags,
    /// A task file's fields (`suanli launch`).
    TaskFile,
}

impl Asked {
    fn name(self, flag: &'static str, field: &'static str) -> &'static str {
        match self {
            Asked::Flags => flag,
            Asked::TaskFile => field,
        }
    }
}

/// Values, most frequent first, as `general ×3, supercomputing`.
fn tally<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let mut counts: Vec<(&str, u64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let shown: Vec<String> = counts
        .iter()
        .take(6)
        .map(|(v, n)| {
            if *n > 1 {
                format!("{v} ×{n}")
            } else {
                (*v).to_owned()
            }
        })
        .collect();
    let more = counts.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn category(class: &str) -> &str {
    class.split(':').next().unwrap_or(class)
}

fn qualifier(class: &str) -> &str {
    class.split_once(':').map_or("none", |(_, q)| q)
}

/// One line per reason, most frequent first: how many offers, what they were, what to change.
/// `quote.excluded` (when the quote was asked for with an `excluded_limit`) gives the details;
/// without it the lines still say what each reason means.
pub fn lines(request: &api::QuoteRequest, quote: &api::QuoteResponse, asked: Asked) -> Vec<String> {
    let mut counts: Vec<(&String, &u64)> = quote
        .excluded_counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let total: u64 = counts.iter().map(|(_, n)| **n).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut out = vec![format!(
        "excluded {total} offer{}:",
        if total == 1 { "" } else { "s" }
    )];
    for (reason, n) in counts {
        let of: Vec<&api::ExcludedOffer> = quote
            .excluded
            .iter()
            .filter(|x| &x.reason == reason)
            .collect();
        let known = if of.is_empty() { None } else { Some(&of) };
        let line = match reason.as_str() {
            "category" => {
                let asked_for = request
                    .class
                    .as_deref()
                    .map(category)
                    .unwrap_or("intelligent");
                let which = known
                    .map(|of| format!(" ({})", tally(of.iter().map(|x| category(&x.class)))))
                    .unwrap_or_default();
                match asked {
                    Asked::Flags => format!(
                        "{n} of another category than {asked_for}{which}: to see them, ask for \
                         their category with --class or leave --class out"
                    ),
                    Asked::TaskFile => format!(
                        "{n} of another category than {asked_for}{which}: to use them, set the \
                         task's resources.class to theirs"
                    ),
                }
            }
            "model" => {
                let which = known
                    .map(|of| format!(" ({})", tally(of.iter().map(|x| qualifier(&x.class)))))
                    .unwrap_or_default();
                format!(
                    "{n} of another accelerator model or partition{which}: ask for one of them \
                     with {}",
                    asked.name(
                        "--gpus MODEL or --class",
                        "resources.accelerators or resources.class"
                    )
                )
            }
            "zone" => {
                let which = known
                    .map(|of| format!(" ({})", tally(of.iter().map(|x| x.zone.as_str()))))
                    .unwrap_or_default();
                format!(
                    "{n} in another zone than {}{which}: pick one of them with {}, or leave it out",
                    request.zone.as_deref().unwrap_or("yours"),
                    asked.name("--zone", "zone")
                )
            }
            "not_valid_now" => format!(
                "{n} not on sale now (outside the times their providers sell them): quote again \
                 later"
            ),
            "accelerator_memory" => format!(
                "{n} with accelerators of less than {} GiB: lower {}",
                request.min_accelerator_memory_gib.unwrap_or(0),
                asked.name("--min-gpu-memory-gib", "resources.min_accelerator_memory")
            ),
            "price" => {
                let cheapest = known
                    .and_then(|of| of.iter().map(|x| x.price_micros_per_unit_hour).min())
                    .map(|p| format!(", the cheapest of them at {}", price(p)))
                    .unwrap_or_default();
                format!(
                    "{n} above your max price{}{cheapest}: raise {}",
                    request
                        .max_price_micros_per_unit_hour
                        .map(|p| format!(" of {}", price(p)))
                        .unwrap_or_default(),
                    asked.name("--max-price", "max_price")
                )
            }
            "units_out_of_range" => format!(
                "{n} that do not sell {} units in one lease (each has a minimum and a maximum): \
                 change {}",
                quote.units,
                asked.name("--units", "the resources")
            ),
            "cpus" => format!(
                "{n} whose {} units have fewer than the {} CPUs you asked for: ask for fewer \
                 CPUs or more units",
                quote.units,
                request.cpus.unwrap_or(0)
            ),
            "memory" => format!(
                "{n} whose {} units have less than the {} MiB of memory you asked for: ask for \
                 less memory or more units",
                quote.units,
                request.memory_mib.unwrap_or(0)
            ),
            "capacity" => {
                let most = known
                    .and_then(|of| of.iter().map(|x| x.units_available).max())
                    .map(|m| format!(" (the most free among them: {m})"))
                    .unwrap_or_default();
                format!(
                    "{n} without {} units free now{most}: ask for fewer units, or quote again \
                     when leases end",
                    quote.units
                )
            }
            other => format!("{n} for the reason {other:?}"),
        };
        out.push(format!("  {line}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(
        class: &str,
        zone: &str,
        price: u64,
        free: u64,
        reason: &str,
    ) -> api::ExcludedOffer {
        api::ExcludedOffer {
            offer_id: "o".into(),
            provider_org_id: "p".into(),
            provider_name: "P".into(),
            class: class.into(),
            zone: zone.into(),
            price_micros_per_unit_hour: price,
            units_available: free,
            reason: reason.into(),
        }
    }

    fn quote(excluded: Vec<api::ExcludedOffer>) -> api::QuoteResponse {
        let mut counts = BTreeMap::new();
        for x in &excluded {
            *counts.entry(x.reason.clone()).or_default() += 1;
        }
        api::QuoteResponse {
            units: 2,
            duration_limit_s: 3600,
            feasible: 0,
            offers: Vec::new(),
            excluded,
            excluded_counts: counts,
            quoted_at: String::new(),
        }
    }

    #[test]
    fn each_reason_names_what_was_left_out_and_how_to_widen() {
        let request = api::QuoteRequest {
            class: Some("intelligent:H100-80G".into()),
            max_price_micros_per_unit_hour: Some(10_000_000),
            units: Some(2),
            duration_limit_s: 3600,
            ..Default::default()
        };
        let q = quote(vec![
            excluded("general", "wuqing-core", 1, 8, "category"),
            excluded("general", "wuqing-core", 1, 8, "category"),
            excluded("supercomputing:debug", "wuqing-core", 1, 8, "category"),
            excluded("general", "wuqing-south", 1, 8, "category"),
            excluded(
                "intelligent:H100-80G",
                "wuqing-core",
                12_000_000,
                8,
                "price",
            ),
            excluded(
                "intelligent:H100-80G",
                "wuqing-core",
                15_000_000,
                8,
                "price",
            ),
        ]);
        let lines = lines(&request, &q, Asked::Flags);
        assert_eq!(lines[0], "excluded 6 offers:");
        assert_eq!(
            lines[1],
            "  4 of another category than intelligent (general ×3, supercomputing): to see them, \
             ask for their category with --class or leave --class out"
        );
        assert_eq!(
            lines[2],
            "  2 above your max price of ¥10.000000/unit-h, the cheapest of them at \
             ¥12.000000/unit-h: raise --max-price"
        );
        assert_eq!(lines.len(), 3);
        let for_task = super::lines(&request, &q, Asked::TaskFile);
        assert!(
            for_task[1].ends_with("set the task's resources.class to theirs"),
            "{}",
            for_task[1]
        );
        assert!(for_task[2].ends_with("raise max_price"), "{}", for_task[2]);
    }

    #[test]
    fn without_details_the_counts_still_say_what_to_change() {
        let mut q = quote(vec![excluded("general", "z", 1, 1, "capacity")]);
        q.excluded.clear();
        let lines = lines(&api::QuoteRequest::default(), &q, Asked::Flags);
        assert_eq!(
            lines,
            [
                "excluded 1 offer:",
                "  1 without 2 units free now: ask for fewer units, or quote again when leases end"
            ]
        );
        assert!(
            super::lines(&api::QuoteRequest::default(), &quote(vec![]), Asked::Flags).is_empty()
        );
    }
}
