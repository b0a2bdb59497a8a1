//! The recogniser cut down to the characters a caller reads.
//!
//! PP-OCRv6's recogniser scores 18,710 classes at every step of a line (Chinese, Japanese,
//! Latin and more), and a machine-readable zone holds 37 of them. Its classifier, one matrix
//! and one bias at the end of the graph (the only tensors with a dimension of the class count),
//! is cut to the classes kept before the model is loaded: a step then scores tens of classes,
//! not thousands, and the output of a line is kilobytes, not megabytes. Among the classes kept
//! the scores, and so the character read at each step, are the model's own.
//!
//! The file is protobuf (ONNX's `ModelProto`). Only the fields on the way to those tensors, to
//! the declared shapes that name the class count and to the `character` metadata are read;
//! every other byte is copied as it is.

/// The model rewritten to keep the classes whose symbol `keep` accepts (and always the CTC
/// blank, class 0, and the space the models append as the last class), with the kept classes'
/// symbols in their new order: `""` for the blank first.
pub fn keep_classes(
    model: &[u8],
    keep: impl Fn(&str) -> bool,
) -> Result<(Vec<u8>, Vec<String>), String> {
    let top = fields(model)?;
    let characters = top
        .iter()
        .filter(|f| f.number == METADATA)
        .filter_map(|f| {
            let entry = fields(f.payload).ok()?;
            let text = |n| entry.iter().find(|e| e.number == n).map(|e| e.payload);
            (text(1)? == b"character").then(|| text(2)).flatten()
        })
        .next()
        .ok_or("no `character` metadata")?;
    let characters = std::str::from_utf8(characters).map_err(|_| "metadata is not UTF-8")?;
    let symbols: Vec<&str> = std::iter::once("")
        .chain(characters.lines())
        .chain(std::iter::once(" "))
        .collect();
    let classes = symbols.len() as u64;
    let kept: Vec<usize> = (0..symbols.len())
        .filter(|&i| i == 0 || i == symbols.len() - 1 || keep(symbols[i]))
        .collect();

    let mut pruned = 0;
    let model = rewrite(&top, |field| match field.number {
        GRAPH => {
            let graph = fields(field.payload)?;
            let graph = rewrite(&graph, |field| match field.number {
                INITIALIZER => {
                    let tensor = prune_tensor(field.payload, classes, &kept)?;
                    pruned += usize::from(tensor.is_some());
                    Ok(tensor.map(|t| len_field(INITIALIZER, &t)))
                }
                OUTPUT | VALUE_INFO => {
                    let shape = resize_dims(field.payload, classes, kept.len() as u64)?;
                    Ok(Some(len_field(field.number, &shape)))
                }
                _ => Ok(None),
            })?;
            Ok(Some(len_field(GRAPH, &graph)))
        }
        _ => Ok(None),
    })?;
    if pruned != 2 {
        return Err(format!(
            "expected a classifier's weight and bias with {classes} classes, found {pruned} \
             such tensors"
        ));
    }
    Ok((model, kept.iter().map(|&i| symbols[i].to_owned()).collect()))
}

// Field numbers of onnx.proto.
const GRAPH: u32 = 7;
const METADATA: u32 = 14;
const INITIALIZER: u32 = 5;
const OUTPUT: u32 = 12;
const VALUE_INFO: u32 = 13;
const DIMS: u32 = 1;
const DATA_TYPE: u32 = 2;
const RAW_DATA: u32 = 9;
const FLOAT: u64 = 1;

/// A tensor with a dimension of `classes`, cut to the `kept` classes along it (a bias, or a
/// weight whose last dimension is the classes); `None` for any other tensor.
fn prune_tensor(tensor: &[u8], classes: u64, kept: &[usize]) -> Result<Option<Vec<u8>>, String> {
    let parts = fields(tensor)?;
    let mut dims = Vec::new();
    for field in parts.iter().filter(|f| f.number == DIMS) {
        match field.wire {
            VARINT => dims.push(field.value),
            LEN => {
                let mut rest = field.payload;
                while !rest.is_empty() {
                    dims.push(varint(&mut rest)?);
                }
            }
            _ => return Err("a tensor's dims of the wrong type".into()),
        }
    }
    if !dims.contains(&classes) {
        return Ok(None);
    }
    let float = parts
        .iter()
        .any(|f| f.number == DATA_TYPE && f.value == FLOAT);
    let data = parts
        .iter()
        .find(|f| f.number == RAW_DATA)
        .map(|f| f.payload)
        .filter(|_| float)
        .ok_or("the classifier is not stored as raw floats")?;
    let rows = match dims[..] {
        [c] if c == classes => 1,
        [r, c] if c == classes => r as usize,
        _ => return Err(format!("a classifier tensor of shape {dims:?}")),
    };
    let width = classes as usize * 4;
    if data.len() != rows * width {
        return Err("a classifier tensor's data does not match its shape".into());
    }
    let mut cut = Vec::with_capacity(rows * kept.len() * 4);
    for row in data.chunks_exact(width) {
        for &class in kept {
            cut.extend_from_slice(&row[class * 4..class * 4 + 4]);
        }
    }
    let mut out = Vec::with_capacity(cut.len() + 64);
    for &d in &dims[..dims.len() - 1] {
        varint_field(&mut out, DIMS, d);
    }
    varint_field(&mut out, DIMS, kept.len() as u64);
    for field in parts
        .iter()
        .filter(|f| f.number != DIMS && f.number != RAW_DATA)
    {
        out.extend_from_slice(field.raw);
    }
    out.extend_from_slice(&len_field(RAW_DATA, &cut));
    Ok(Some(out))
}

/// A value's declared shape (`ValueInfoProto.type.tensor_type.shape.dim`) with every dimension
/// of `from` made `to`.
fn resize_dims(value: &[u8], from: u64, to: u64) -> Result<Vec<u8>, String> {
    // The path to a dimension's value: type, tensor_type, shape, dim, dim_value.
    fn down(message: &[u8], path: &[u32], from: u64, to: u64) -> Result<Vec<u8>, String> {
        let Some((&first, rest)) = path.split_first() else {
            return Ok(message.to_vec());
        };
        rewrite(&fields(message)?, |field| {
            if field.number != first {
                return Ok(None);
            }
            if rest.is_empty() {
                if field.wire == VARINT && field.value == from {
                    let mut out = Vec::new();
                    varint_field(&mut out, first, to);
                    return Ok(Some(out));
                }
                return Ok(None);
            }
            if field.wire != LEN {
                return Ok(None);
            }
            Ok(Some(len_field(
                first,
                &down(field.payload, rest, from, to)?,
            )))
        })
    }
    down(value, &[2, 1, 2, 1, 1], from, to)
}

const VARINT: u8 = 0;
const LEN: u8 = 2;

/// One field of a protobuf message.
struct Field<'a> {
    number: u32,
    wire: u8,
    /// A varint's value.
    value: u64,
    /// A length-delimited field's bytes.
    payload: &'a [u8],
    /// The whole field as encoded, key included.
    raw: &'a [u8],
}

fn fields(mut message: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    while !message.is_empty() {
        let start = message;
        let key = varint(&mut message)?;
        let (number, wire) = ((key >> 3) as u32, (key & 7) as u8);
        let (mut value, mut payload) = (0, &[][..]);
        match wire {
            VARINT => value = varint(&mut message)?,
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                message = message.get(n..).ok_or("a truncated model file")?;
            }
            LEN => {
                let n = usize::try_from(varint(&mut message)?).map_err(|_| "a field too long")?;
                payload = message.get(..n).ok_or("a truncated model file")?;
                message = &message[n..];
            }
            _ => return Err(format!("an unknown protobuf wire type {wire}")),
        }
        let raw = &start[..start.len() - message.len()];
        out.push(Field {
            number,
            wire,
            value,
            payload,
            raw,
        });
    }
    Ok(out)
}

/// The message with each field `change` returns a replacement for (the whole field, encoded)
/// replaced, and every other field as it was.
fn rewrite<'a>(
    message: &[Field<'a>],
    mut change: impl FnMut(&Field<'a>) -> Result<Option<Vec<u8>>, String>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(message.iter().map(|f| f.raw.len()).sum());
    for field in message {
        match change(field)? {
            Some(replacement) => out.extend_from_slice(&replacement),
            None => out.extend_from_slice(field.raw),
        }
    }
    Ok(out)
}

fn varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("a truncated model file")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint longer than 64 bits".into())
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3 | u64::from(VARINT));
    put_varint(out, value);
}

fn len_field(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    put_varint(&mut out, u64::from(number) << 3 | u64::from(LEN));
    put_varint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tensor of `dims` with `values` as raw floats.
    fn tensor(name: &str, dims: &[u64], values: &[f32]) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            varint_field(&mut t, DIMS, d);
        }
        varint_field(&mut t, DATA_TYPE, FLOAT);
        t.extend(len_field(8, name.as_bytes()));
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        t.extend(len_field(RAW_DATA, &raw));
        t
    }

    /// An output declared as `[batch, steps, classes]`.
    fn output(classes: u64) -> Vec<u8> {
        let dim = |d: u64| {
            let mut v = Vec::new();
            varint_field(&mut v, 1, d);
            len_field(1, &v)
        };
        let shape: Vec<u8> = [1, 40, classes].iter().flat_map(|&d| dim(d)).collect();
        let mut tensor_type = Vec::new();
        varint_field(&mut tensor_type, 1, FLOAT);
        tensor_type.extend(len_field(2, &shape));
        let mut value = len_field(1, b"probabilities");
        value.extend(len_field(2, &len_field(1, &tensor_type)));
        value
    }

    fn floats(tensor: &[u8]) -> (Vec<u64>, Vec<f32>) {
        let parts = fields(tensor).unwrap();
        let dims = parts
            .iter()
            .filter(|f| f.number == DIMS)
            .map(|f| f.value)
            .collect();
        let raw = parts.iter().find(|f| f.number == RAW_DATA).unwrap().payload;
        let values = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (dims, values)
    }

    #[test]
    fn the_classifier_keeps_the_chosen_classes_and_everything_else_is_untouched() {
        // Classes: blank, "A", "字", "<", space.
        let weight: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let mut graph = len_field(1, b"a node, copied as it is");
        graph.extend(len_field(INITIALIZER, &tensor("w", &[2, 5], &weight)));
        graph.extend(len_field(
            INITIALIZER,
            &tensor("b", &[5], &[0.5, 1.5, 2.5, 3.5, 4.5]),
        ));
        graph.extend(len_field(
            INITIALIZER,
            &tensor("other", &[3], &[7.0, 8.0, 9.0]),
        ));
        graph.extend(len_field(OUTPUT, &output(5)));
        let mut model = Vec::new();
        varint_field(&mut model, 1, 8);
        model.extend(len_field(GRAPH, &graph));
        let mut entry = len_field(1, b"character");
        entry.extend(len_field(2, "A\n字\n<".as_bytes()));
        model.extend(len_field(METADATA, &entry));

        let (pruned, symbols) = keep_classes(&model, |s| s != "字").unwrap();

        assert_eq!(symbols, ["", "A", "<", " "]);
        let top = fields(&pruned).unwrap();
        assert_eq!(top[0].raw, &model[..2], "the IR version is copied");
        let graph = fields(top.iter().find(|f| f.number == GRAPH).unwrap().payload).unwrap();
        assert_eq!(graph[0].payload, b"a node, copied as it is");
        let tensors: Vec<_> = graph
            .iter()
            .filter(|f| f.number == INITIALIZER)
            .map(|f| floats(f.payload))
            .collect();
        assert_eq!(
            tensors[0],
            (vec![2, 4], vec![0.0, 1.0, 3.0, 4.0, 5.0, 6.0, 8.0, 9.0])
        );
        assert_eq!(tensors[1], (vec![4], vec![0.5, 1.5, 3.5, 4.5]));
        assert_eq!(tensors[2], (vec![3], vec![7.0, 8.0, 9.0]));
        let declared = graph.iter().find(|f| f.number == OUTPUT).unwrap().payload;
        assert_eq!(declared, output(4));
    }

    #[test]
    fn a_model_without_a_classifier_of_its_classes_is_refused() {
        let mut graph = len_field(INITIALIZER, &tensor("w", &[2, 3], &[0.0; 6]));
        graph.extend(len_field(OUTPUT, &output(3)));
        let mut model = len_field(GRAPH, &graph);
        let mut entry = len_field(1, b"character");
        entry.extend(len_field(2, b"A\nB\nC"));
        model.extend(len_field(METADATA, &entry));

        let refused = keep_classes(&model, |_| true).unwrap_err();

        assert!(refused.contains("found 0"), "{refused}");
        assert!(
            keep_classes(b"", |_| true)
                .unwrap_err()
                .contains("metadata")
        );
    }
}
