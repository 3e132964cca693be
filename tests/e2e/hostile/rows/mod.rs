//! The hostile table, one file per group of rows (the file name is the group).

mod claims_owner;
mod durations;
mod foreign_targets;
mod hostile_edits;
mod huge_templates;
mod oversized;
mod timestamps;
mod unicode;
mod unknown_fields;
mod wrong_types;

use super::model::{Row, Table};
use crate::table::Ctx;

pub(crate) fn rows(ctx: &Ctx) -> Vec<Row> {
    let mut table = Table {
        ctx,
        rows: Vec::new(),
    };
    oversized::rows(&mut table);
    unicode::rows(&mut table);
    durations::rows(&mut table);
    timestamps::rows(&mut table);
    wrong_types::rows(&mut table);
    unknown_fields::rows(&mut table);
    huge_templates::rows(&mut table);
    claims_owner::rows(&mut table);
    foreign_targets::rows(&mut table);
    hostile_edits::rows(&mut table);
    table.rows
}
