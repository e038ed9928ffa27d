//! The conformance report: sections of counted categories and detail lines, each category
//! marked as passing, failing or neutral (neither: e.g. a case the host cannot run), ending
//! with the line `N passed, M failed`.
//!
//! This module owns the report's data and its text form; the suites fill it.

use std::fmt;

/// How a category counts in the totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Counted and shown, but neither passed nor failed (with its reason in the label).
    Neutral,
}

/// A counted category with its detail lines (case names, causes).
#[derive(Clone, Debug)]
pub struct Category {
    pub label: String,
    pub verdict: Verdict,
    pub count: usize,
    pub details: Vec<String>,
}

/// One suite (or one file of a suite).
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub title: String,
    /// Free notes printed under the title (how the suite was run).
    pub notes: Vec<String>,
    pub categories: Vec<Category>,
}

impl Section {
    pub fn new(title: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            ..Section::default()
        }
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Declares a category (so it is printed even with a zero count), in display order.
    pub fn declare(&mut self, label: &str, verdict: Verdict) {
        if !self.categories.iter().any(|c| c.label == label) {
            self.categories.push(Category {
                label: label.to_string(),
                verdict,
                count: 0,
                details: Vec::new(),
            });
        }
    }

    /// Counts one item in a category, with an optional detail line.
    pub fn add(&mut self, label: &str, verdict: Verdict, detail: Option<String>) {
        self.declare(label, verdict);
        let c = self
            .categories
            .iter_mut()
            .find(|c| c.label == label)
            .expect("declared above");
        c.count += 1;
        if let Some(d) = detail {
            c.details.push(d);
        }
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.categories
            .iter()
            .filter(|c| c.verdict == verdict)
            .map(|c| c.count)
            .sum()
    }
}

/// A whole conformance run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub sections: Vec<Section>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.sections.iter().map(|s| s.count(Verdict::Pass)).sum()
    }

    pub fn failed(&self) -> usize {
        self.sections.iter().map(|s| s.count(Verdict::Fail)).sum()
    }

    pub fn neutral(&self) -> usize {
        self.sections
            .iter()
            .map(|s| s.count(Verdict::Neutral))
            .sum()
    }

    pub fn merge(&mut self, other: Report) {
        self.sections.extend(other.sections);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.sections {
            writeln!(f, "== {} ==", s.title)?;
            for n in &s.notes {
                writeln!(f, "  note: {n}")?;
            }
            for c in &s.categories {
                let tag = match c.verdict {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "FAIL",
                    Verdict::Neutral => "----",
                };
                writeln!(f, "  [{tag}] {:>5}  {}", c.count, c.label)?;
                for d in &c.details {
                    writeln!(f, "           {d}")?;
                }
            }
            writeln!(
                f,
                "  {}: {} passed, {} failed, {} not counted",
                s.title,
                s.count(Verdict::Pass),
                s.count(Verdict::Fail),
                s.count(Verdict::Neutral)
            )?;
            writeln!(f)?;
        }
        writeln!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}
