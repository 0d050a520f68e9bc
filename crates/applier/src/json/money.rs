//! `money` as PostgreSQL prints it. Its binary form is a count of the currency's smallest unit
//! (cents, with two fraction digits); its text follows the server's `lc_monetary`: the number
//! of fraction digits, the decimal and group symbols, the group size, and where the currency
//! symbol and the sign go. Those are learned from how the source prints two probe amounts.

/// How amounts are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Money {
    points: u32,
    decimal: char,
    /// The group separator; no grouping when empty.
    group_sep: String,
    group: usize,
    /// Text before and after the digits of amounts at or above zero, and of amounts below.
    positive: (String, String),
    negative: (String, String),
}

/// The probe amount, in whole currency units (`1234567::int8::money`).
pub(super) const PROBE: i64 = 1_234_567;

impl Default for Money {
    /// The `C` locale's layout, which `en_US` shares: `$1,234.56`, `-$1,234.56`.
    fn default() -> Self {
        Money {
            points: 2,
            decimal: '.',
            group_sep: ",".into(),
            group: 3,
            positive: ("$".into(), String::new()),
            negative: ("-$".into(), String::new()),
        }
    }
}

impl Money {
    /// The layout that prints `positive` and `negative` (the source's text of [`PROBE`] and of
    /// its negation) with `points` fraction digits; `None` if none found does.
    pub(super) fn learn(positive: &str, negative: &str, points: u32) -> Option<Money> {
        let p = Parts::of(positive, points)?;
        let n = Parts::of(negative, points)?;
        if (p.decimal, &p.group_sep, p.group) != (n.decimal, &n.group_sep, n.group) {
            return None;
        }
        let money = Money {
            points,
            decimal: p.decimal,
            group_sep: p.group_sep,
            group: p.group,
            positive: (p.before, p.after),
            negative: (n.before, n.after),
        };
        let probe = PROBE.checked_mul(10_i64.checked_pow(points)?)?;
        (money.format(probe) == positive && money.format(-probe) == negative).then_some(money)
    }

    /// The plain amount (`-1234.56`), for a layout that could not be learned.
    pub(super) fn plain(points: u32) -> Money {
        Money {
            points,
            decimal: '.',
            group_sep: String::new(),
            group: 0,
            positive: Default::default(),
            negative: ("-".into(), String::new()),
        }
    }

    /// The text of `units` of the smallest currency unit.
    pub(super) fn format(&self, units: i64) -> String {
        let digits = format!("{:0width$}", units.unsigned_abs(), width = self.points as usize + 1);
        let (whole, frac) = digits.split_at(digits.len() - self.points as usize);
        let (before, after) = if units < 0 { &self.negative } else { &self.positive };
        let mut s = String::with_capacity(digits.len() + 16);
        s.push_str(before);
        for (i, c) in whole.chars().enumerate() {
            let left = whole.len() - i;
            s.push(c);
            if self.group > 0 && left > 1 && (left - 1) % self.group == 0 {
                s.push_str(&self.group_sep);
            }
        }
        if !frac.is_empty() {
            s.push(self.decimal);
            s.push_str(frac);
        }
        s.push_str(after);
        s
    }
}

/// One probe amount taken apart.
struct Parts {
    before: String,
    group_sep: String,
    group: usize,
    decimal: char,
    after: String,
}

impl Parts {
    /// Finds the digits 1 to 7 of [`PROBE`] (with separators between some) and, when there
    /// are fraction digits, the decimal symbol and the zeros after them.
    fn of(text: &str, points: u32) -> Option<Parts> {
        let start = text.find('1')?;
        let (mut sep, mut pending) = (None::<String>, String::new());
        let (mut seen, mut last_sep_at, mut end) = (0u8, 0u8, None);
        for (i, c) in text[start..].char_indices() {
            if c == char::from(b'1' + seen) {
                if !pending.is_empty() {
                    if *sep.get_or_insert_with(|| pending.clone()) != pending {
                        return None;
                    }
                    last_sep_at = seen;
                    pending.clear();
                }
                seen += 1;
                if seen == 7 {
                    end = Some(start + i + 1);
                    break;
                }
            } else {
                pending.push(c);
            }
        }
        let mut rest = text[end?..].chars();
        let decimal = if points > 0 { rest.next()? } else { '.' };
        for _ in 0..points {
            (rest.next()? == '0').then_some(())?;
        }
        Some(Parts {
            before: text[..start].to_owned(),
            group_sep: sep?,
            group: usize::from(7 - last_sep_at),
            decimal,
            after: rest.as_str().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_learned_from_the_probes() {
        let c = Money::learn("$1,234,567.00", "-$1,234,567.00", 2).unwrap();
        assert_eq!(c, Money::default());
        assert_eq!(c.format(0), "$0.00");
        assert_eq!(c.format(-5), "-$0.05");
        assert_eq!(c.format(i64::MIN), "-$92,233,720,368,547,758.08");
        let de = Money::learn("1.234.567,00 €", "-1.234.567,00 €", 2).unwrap();
        assert_eq!(de.format(123_456), "1.234,56 €");
        let ch = Money::learn("Fr. 1'234'567.00", "Fr.-1'234'567.00", 2).unwrap();
        assert_eq!(ch.format(-100), "Fr.-1.00");
        let jp = Money::learn("¥1,234,567", "-¥1,234,567", 0).unwrap();
        assert_eq!(jp.format(1000), "¥1,000");
        let paren = Money::learn("$1,234,567.00", "($1,234,567.00)", 2).unwrap();
        assert_eq!(paren.format(-1), "($0.01)");
        let indian = Money::learn("₹ 12,34,567.00", "-₹ 12,34,567.00", 2);
        assert_eq!(indian, None, "PostgreSQL groups by the first size only; this is not it");
        assert_eq!(Money::learn("1234567.00", "-1234567.00", 2), None);
        assert_eq!(Money::plain(2).format(-123_456), "-1234.56");
        assert_eq!(Money::plain(0).format(7), "7");
    }
}
