//! Porcupine's key-value histories (`test_data/kv/cNN-{ok,bad}.txt`): one EDN map per line,
//! `{:process 0, :type :invoke, :f :append, :key "4", :value "x 0 1 y"}`.
//!
//! Checked against [`KvModel`](crate::model::KvModel): per key a string, initially `""`; `:get` returns it, `:put`
//! replaces it, `:append` concatenates. Keys are independent, so the history is split into one
//! [`Partition`] per key (Porcupine's P-compositionality); without the split the c10 files take
//! Porcupine a minute and more. The files hold only `:invoke` and `:ok`; operations left open
//! have unknown outcomes (Porcupine closes them at the end, which for put and append is the
//! same), and a `:fail`, if one ever appears, is dropped as in Jepsen.

use std::collections::BTreeMap;

use super::edn::Edn;
use super::{position, EdnOp};
use crate::checker::Partition;
use crate::history::{CompletionType, ParseError};
use crate::model::KvInput;
use crate::search::ModelOp;

/// The history split by key, keys in lexicographic order.
pub fn kv_partitions(
    ops: &[EdnOp<'_>],
) -> Result<Vec<Partition<KvInput, Option<String>>>, ParseError> {
    let mut keys: BTreeMap<&str, Partition<KvInput, Option<String>>> = BTreeMap::new();
    for op in ops {
        let line = op.invoke.line;
        let refuse = |reason: String| ParseError { line, reason };
        let key = match op.invoke.form.get("key") {
            Some(Edn::Str(key)) => key.as_str(),
            other => return Err(refuse(format!(":key {other:?} is not a string"))),
        };
        let value = || match op.invoke.form.get("value") {
            Some(Edn::Str(value)) => Ok(value.clone()),
            other => Err(refuse(format!(
                ":{} needs a string :value, not {other:?}",
                op.f
            ))),
        };
        let input = match op.f {
            "get" => KvInput::Get,
            "put" => KvInput::Put(value()?),
            "append" => KvInput::Append(value()?),
            other => {
                return Err(refuse(format!(
                    "a key-value store has no :f :{other} (get, put, append)"
                )))
            }
        };
        let call = position(op.invoke_index);
        let model_op = match &op.completion {
            Some(c) if c.kind == CompletionType::Ok => {
                let output = match (&input, c.entry.form.get("value")) {
                    (KvInput::Get, Some(Edn::Str(seen))) => Some(seen.clone()),
                    (KvInput::Get, None | Some(Edn::Nil)) => None,
                    (KvInput::Get, Some(other)) => {
                        return Err(ParseError {
                            line: c.entry.line,
                            reason: format!("a :get returned {other:?}, not a string"),
                        })
                    }
                    _ => None,
                };
                ModelOp::completed(call, position(c.index), input, output)
            }
            Some(c) if c.kind == CompletionType::Fail => continue,
            _ => ModelOp::unknown(call, input),
        };
        let partition = keys.entry(key).or_insert_with(|| Partition {
            key: key.to_string(),
            ops: Vec::new(),
            lines: Vec::new(),
        });
        partition.ops.push(model_op);
        partition.lines.push(line);
    }
    Ok(keys.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::super::{edn, pair_operations};
    use super::*;

    #[test]
    fn splits_by_key_and_names_bad_lines() {
        let text = "{:process 0, :type :invoke, :f :put, :key \"b\", :value \"x\"}\n\
                    {:process 1, :type :invoke, :f :get, :key \"a\", :value nil}\n\
                    {:process 1, :type :ok, :f :get, :key \"a\", :value \"\"}\n";
        let entries = edn::parse_history(text).expect("valid EDN");
        let partitions = kv_partitions(&pair_operations(&entries).expect("pairs")).expect("kv");
        let keys: Vec<&str> = partitions.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(partitions[0].ops[0].output(), Some(&Some(String::new())));
        assert_eq!(partitions[1].ops[0].output(), None);
        assert_eq!(partitions[1].lines, [1]);

        let bad = "{:process 0, :type :invoke, :f :get, :key \"a\"}\n{:process 1, :type :invoke, :f :put, :key \"a\", :value 3}";
        let entries = edn::parse_history(bad).expect("valid EDN");
        let error = kv_partitions(&pair_operations(&entries).expect("pairs")).expect_err("bad");
        assert_eq!(error.line, 2);
    }
}
