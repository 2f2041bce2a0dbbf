//! Parsing ids that cross the FFI boundary as hex strings.

use std::str::FromStr;

use crate::error::ApiError;

/// Parse a hex id, naming the parameter on failure.
pub(crate) fn parse<T: FromStr>(field: &str, value: &str) -> Result<T, ApiError> {
    value.parse::<T>().map_err(|_| {
        ApiError::invalid(
            field,
            format!("{value:?} is not a valid id (lowercase hex expected)"),
        )
    })
}

/// Parse an optional hex id.
pub(crate) fn parse_opt<T: FromStr>(
    field: &str,
    value: Option<&str>,
) -> Result<Option<T>, ApiError> {
    value.map(|v| parse(field, v)).transpose()
}
