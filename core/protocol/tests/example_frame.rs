//! The byte-level example in docs/protocol.md is generated here: the annotated dump must be
//! exactly what `encode_frame` produces, and the document must contain it verbatim.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;

use homeroom_core::{ClassId, DocKind, FamilyId};
use homeroom_protocol::{
    ClassCatalog, DEFAULT_MAX_FRAME, Decoded, DocDigest, FrameDecoder, Message, encode_frame,
};

fn example() -> Message {
    Message::Catalog {
        classes: vec![
            ClassCatalog {
                class: ClassId([0xa1; 16]),
                digest: [0x5c, 0x0f, 0x11, 0x7e, 0x32, 0x9b, 0x04, 0xd8],
                docs: None,
            },
            ClassCatalog {
                class: ClassId([0xb2; 16]),
                digest: [0x41, 0x6e, 0x07, 0xc3, 0x9a, 0x15, 0xe2, 0x60],
                docs: Some(vec![
                    DocDigest {
                        kind: DocKind::Notebook,
                        digest: [0x13, 0x37, 0x42, 0x99, 0x0a, 0x6b, 0xcd, 0x21],
                    },
                    DocDigest {
                        kind: DocKind::Lane(FamilyId([0x22; 8])),
                        digest: [0x88, 0x1f, 0x50, 0x3c, 0xe7, 0x02, 0x94, 0x7b],
                    },
                ]),
            },
        ],
    }
}

fn hex(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The annotated dump: each segment's bytes (16 per line) and what they are.
fn annotated(segments: &[(Vec<u8>, &str)]) -> String {
    let mut out = String::new();
    for (bytes, label) in segments {
        for (i, line) in bytes.chunks(16).enumerate() {
            let h = hex(line).join(" ");
            let label = if i == 0 { *label } else { "" };
            out.push_str(format!("{h:<49}{label}").trim_end());
            out.push('\n');
        }
    }
    out
}

#[test]
fn example_frame_in_protocol_md_is_true() {
    let msg = example();
    let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();

    let body_len = (frame.len() - 4) as u32;
    let segments: Vec<(Vec<u8>, &str)> = vec![
        (
            body_len.to_be_bytes().to_vec(),
            "header: body length, u32 big-endian (= 79)",
        ),
        (vec![0x02], "Message tag, varint: 2 = Catalog"),
        (vec![0x02], "classes: Vec length, varint: 2"),
        (vec![0xa1; 16], "[0].class: ClassId, 16 raw bytes"),
        (
            vec![0x5c, 0x0f, 0x11, 0x7e, 0x32, 0x9b, 0x04, 0xd8],
            "[0].digest: 8 raw bytes (equals the device's)",
        ),
        (vec![0x00], "[0].docs: Option tag 0 = None"),
        (vec![0xb2; 16], "[1].class"),
        (
            vec![0x41, 0x6e, 0x07, 0xc3, 0x9a, 0x15, 0xe2, 0x60],
            "[1].digest (differs from the device's)",
        ),
        (vec![0x01], "[1].docs: Option tag 1 = Some"),
        (vec![0x02], "  Vec length: 2"),
        (vec![0x01], "  [0].kind: DocKind tag 1 = Notebook"),
        (
            vec![0x13, 0x37, 0x42, 0x99, 0x0a, 0x6b, 0xcd, 0x21],
            "  [0].digest: heads digest",
        ),
        (vec![0x02], "  [1].kind: DocKind tag 2 = Lane(FamilyId)"),
        (vec![0x22; 8], "  FamilyId: 8 raw bytes"),
        (
            vec![0x88, 0x1f, 0x50, 0x3c, 0xe7, 0x02, 0x94, 0x7b],
            "  [1].digest",
        ),
    ];
    let concatenated: Vec<u8> = segments.iter().flat_map(|(b, _)| b.clone()).collect();
    assert_eq!(
        concatenated, frame,
        "the annotation does not match the encoding"
    );
    assert_eq!(body_len, 79);

    // And it decodes back.
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    d.push(&frame);
    assert_eq!(d.next_message(), Ok(Decoded::Message(msg)));

    let dump = annotated(&segments);
    let one_line = hex(&frame).concat();
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/protocol.md");
    assert!(
        doc.contains(&dump),
        "docs/protocol.md lacks the example dump; it must contain:\n{dump}"
    );
    assert!(
        doc.contains(&one_line),
        "docs/protocol.md lacks the example frame as one hex string:\n{one_line}"
    );
}
