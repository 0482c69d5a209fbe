//! How figures are written on the dashboards. The browser test formats the
//! API's values with these same functions and compares them with the page.

/// Hashes per second with an SI prefix: `0 H/s`, `12.3 kH/s`, `1.50 GH/s`.
pub fn hashrate(hashes_per_second: f64) -> String {
    si(hashes_per_second, "H/s")
}

/// `value` with an SI prefix and three significant digits.
pub fn si(value: f64, unit: &str) -> String {
    const PREFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    if !value.is_finite() || value <= 0.0 {
        return format!("0 {unit}");
    }
    let mut scaled = value;
    let mut prefix = 0;
    while scaled >= 999.5 && prefix < PREFIXES.len() - 1 {
        scaled /= 1000.0;
        prefix += 1;
    }
    let digits = if scaled >= 99.95 {
        0
    } else if scaled >= 9.995 {
        1
    } else {
        2
    };
    // Whole numbers of base units read better without decimals ("3 H/s").
    let digits = if prefix == 0 && scaled.fract() == 0.0 {
        0
    } else {
        digits
    };
    format!("{scaled:.digits$} {}{unit}", PREFIXES[prefix])
}

/// An integer with thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A Unix-millisecond time as `2026-11-21 08:20:09 UTC`.
pub fn datetime(ms: i64) -> String {
    let (date, secs) = split_day(ms);
    format!(
        "{date} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `08:20` (UTC), for chart axes over a day or less.
pub fn clock(ms: i64) -> String {
    let (_, secs) = split_day(ms);
    format!("{:02}:{:02}", secs / 3600, secs / 60 % 60)
}

/// `Nov 21` (UTC), for chart axes over several days.
pub fn month_day(ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y_m_d, _) = civil(ms);
    format!("{} {}", MONTHS[(y_m_d.1 - 1) as usize], y_m_d.2)
}

/// A duration in milliseconds as `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s / 60 % 60),
        _ => format!("{} d {} h", s / 86_400, s / 3600 % 24),
    }
}

fn split_day(ms: i64) -> (String, i64) {
    let ((y, m, d), secs) = civil(ms);
    (format!("{y:04}-{m:02}-{d:02}"), secs)
}

/// (year, month, day) and seconds into the day, UTC, of a Unix-ms time.
fn civil(ms: i64) -> ((i64, u32, u32), i64) {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    (civil_from_days(days), secs.rem_euclid(86_400))
}

/// Gregorian date of a day count since 1970-01-01 (proleptic, any era).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashrates_carry_a_readable_prefix() {
        assert_eq!(hashrate(0.0), "0 H/s");
        assert_eq!(hashrate(3.0), "3 H/s");
        assert_eq!(hashrate(12_345.0), "12.3 kH/s");
        assert_eq!(hashrate(999_999.0), "1.00 MH/s");
        assert_eq!(hashrate(1.5e9), "1.50 GH/s");
        assert_eq!(hashrate(250e12), "250 TH/s");
        assert_eq!(hashrate(f64::NAN), "0 H/s");
    }

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00 UTC");
        // 2000-02-29 12:34:56 UTC, a leap day of a century leap year.
        assert_eq!(datetime(951_827_696_000), "2000-02-29 12:34:56 UTC");
        assert_eq!(datetime(1_795_000_000_123), "2026-11-18 11:06:40 UTC");
        assert_eq!(clock(1_795_000_000_123), "11:06");
        assert_eq!(month_day(1_795_000_000_123), "Nov 18");
        assert_eq!(datetime(-1000), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn durations_use_the_largest_sensible_units() {
        assert_eq!(duration(45_000), "45 s");
        assert_eq!(duration(12 * 60_000), "12 min");
        assert_eq!(duration(3_900_000), "1 h 5 min");
        assert_eq!(duration(2 * 86_400_000 + 4 * 3_600_000), "2 d 4 h");
    }
}
