//! Decoding shared by the ehash protocol crates: every decoder treats its
//! input as hostile and accepts a payload only when one whole message fills
//! it exactly.

use stratum_core::binary_sv2::{self, Decodable, GetSize};
use stratum_core::framing_sv2::framing::{EncodableFrame, MessageFrame, SerializedFrame};
use stratum_core::framing_sv2::header::Header;

/// Why a payload is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown message type 0x{msg_type:02x} for {protocol}")]
    UnknownMessageType {
        protocol: &'static str,
        msg_type: u8,
    },
    #[error("malformed {message}: {reason}")]
    Malformed {
        message: &'static str,
        reason: String,
    },
    #[error("{message} followed by {extra} unexpected bytes")]
    TrailingBytes { message: &'static str, extra: usize },
    #[error("frame has extension type 0x{got:04x}, expected 0x{expected:04x}")]
    WrongExtension { expected: u16, got: u16 },
    #[error("{message} must{} have the channel_msg bit set", if *.expected { "" } else { " not" })]
    WrongChannelBit {
        message: &'static str,
        expected: bool,
    },
    #[error("{message} has an invalid field: {reason}")]
    InvalidField {
        message: &'static str,
        reason: String,
    },
}

/// Decodes one `T` that must fill `payload` exactly.
///
/// binary_sv2 stops after the last field and ignores what follows; a frame
/// with trailing bytes is not the message its header claims, so it is refused.
pub fn decode_exact<'a, T>(message: &'static str, payload: &'a mut [u8]) -> Result<T, DecodeError>
where
    T: Decodable<'a> + GetSize,
{
    let len = payload.len();
    let decoded: T = binary_sv2::from_bytes(payload).map_err(|e| DecodeError::Malformed {
        message,
        reason: format!("{e:?}"),
    })?;
    let used = decoded.get_size();
    if used != len {
        return Err(DecodeError::TrailingBytes {
            message,
            extra: len.saturating_sub(used),
        });
    }
    Ok(decoded)
}

/// What [`message_enum!`] expands to refers to these, so a crate using the
/// macro needs no dependency of its own on the SRI crates.
#[doc(hidden)]
pub mod reexports {
    pub use stratum_core::binary_sv2;
}

/// Why a message could not be put in a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot frame {message}: {reason}")]
pub struct EncodeError {
    pub message: &'static str,
    pub reason: String,
}

/// One protocol's set of messages: how to tell them apart and decode them.
/// [`message_enum!`] implements it; encoding and frame handling live here once.
pub trait MessageSet:
    Sized
    + core::fmt::Debug
    + Clone
    + PartialEq
    + GetSize
    + Into<binary_sv2::encodable::EncodableField<'static>>
{
    /// Name of the protocol, for errors.
    const PROTOCOL: &'static str;
    /// The SV2 extension type of every message of this set.
    const EXTENSION_TYPE: u16;
    /// Whether the messages of this set are channel messages.
    const CHANNEL_MSG: bool;

    /// The message type that goes in the frame header.
    fn message_type(&self) -> u8;

    /// The message's name, for logs.
    fn name(&self) -> &'static str;

    /// Decodes a payload of message type `msg_type` that the frame header
    /// marks as a channel message or not.
    fn decode_payload(
        msg_type: u8,
        channel_msg: bool,
        payload: &mut [u8],
    ) -> Result<Self, DecodeError>;

    /// Decodes the payload of a frame whose header is `header`.
    fn decode(header: &Header, payload: &mut [u8]) -> Result<Self, DecodeError> {
        if header.ext_type_without_channel_msg() != Self::EXTENSION_TYPE {
            return Err(DecodeError::WrongExtension {
                expected: Self::EXTENSION_TYPE,
                got: header.ext_type_without_channel_msg(),
            });
        }
        Self::decode_payload(header.msg_type(), header.channel_msg(), payload)
    }

    /// Decodes one whole plaintext frame (header and payload).
    fn decode_frame(bytes: &mut [u8]) -> Result<Self, DecodeError> {
        let header = SerializedFrame::<&mut [u8]>::parse_header(bytes).map_err(|hint| {
            DecodeError::Malformed {
                message: Self::PROTOCOL,
                reason: format!("frame: {hint}"),
            }
        })?;
        let payload_start = bytes.len() - header.payload_length();
        Self::decode(&header, &mut bytes[payload_start..])
    }

    /// The frame to hand to a codec encoder.
    fn into_frame(self) -> Result<MessageFrame<Self>, EncodeError> {
        let (name, msg_type) = (self.name(), self.message_type());
        MessageFrame::from_message(self, msg_type, Self::EXTENSION_TYPE, Self::CHANNEL_MSG).map_err(
            |e| EncodeError {
                message: name,
                reason: format!("{e:?}"),
            },
        )
    }

    /// The whole plaintext frame as bytes (header and payload).
    fn to_frame_bytes(self) -> Result<Vec<u8>, EncodeError> {
        let name = self.name();
        let frame = self.into_frame()?;
        let mut out = vec![0u8; frame.encoded_length()];
        frame.encode_into(&mut out).map_err(|e| EncodeError {
            message: name,
            reason: format!("{e:?}"),
        })?;
        Ok(out)
    }
}

/// Declares the message set of one protocol as an enum of owned messages
/// and implements [`MessageSet`] for it.
///
/// Each variant names its owned message type, its message-type constant and
/// the type it is decoded as (`=> into_owned` when that type borrows). The
/// optional `common_fields` are fields every message of the set has; each
/// gets an accessor of the same name on the enum.
#[macro_export]
macro_rules! message_enum {
    // The variants travel as one token tree so that they can be repeated
    // once per common field.
    (@common_fields $name:ident $variants:tt $( $(#[$fmeta:meta])* $field:ident: $fty:ty, )*) => {
        $( $crate::message_enum!(@common_field $name $variants $(#[$fmeta])* $field: $fty); )*
    };
    (@common_field $name:ident [$($variant:ident)*] $(#[$fmeta:meta])* $field:ident: $fty:ty) => {
        impl $name {
            $(#[$fmeta])*
            pub fn $field(&self) -> $fty {
                match self { $( Self::$variant(m) => m.$field, )* }
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            protocol: $protocol:literal,
            extension_type: $ext:expr,
            channel_msg: $chan:expr,
            $( common_fields: { $( $(#[$fmeta:meta])* $field:ident: $fty:ty, )* }, )?
            messages: {
                $( $(#[$vmeta:meta])* $variant:ident($owned:ty) = $msg_type:expr,
                   decoded as $decoded:ty $(=> $into:ident)? ; )*
            }
        }
    ) => {
        $crate::message_enum!(
            @common_fields $name [$($variant)*] $($( $(#[$fmeta])* $field: $fty, )*)?
        );

        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant($owned), )*
        }

        impl $crate::wire::MessageSet for $name {
            const PROTOCOL: &'static str = $protocol;
            const EXTENSION_TYPE: u16 = $ext;
            const CHANNEL_MSG: bool = $chan;

            fn message_type(&self) -> u8 {
                match self { $( Self::$variant(_) => $msg_type, )* }
            }

            fn name(&self) -> &'static str {
                match self { $( Self::$variant(_) => stringify!($variant), )* }
            }

            fn decode_payload(
                msg_type: u8,
                channel_msg: bool,
                payload: &mut [u8],
            ) -> Result<Self, $crate::wire::DecodeError> {
                $(
                    if msg_type == $msg_type {
                        let name = stringify!($variant);
                        if channel_msg != $chan {
                            return Err($crate::wire::DecodeError::WrongChannelBit {
                                message: name,
                                expected: $chan,
                            });
                        }
                        let m: $decoded = $crate::wire::decode_exact(name, payload)?;
                        return Ok(Self::$variant(m $(.$into())?));
                    }
                )*
                Err($crate::wire::DecodeError::UnknownMessageType { protocol: $protocol, msg_type })
            }
        }

        impl $crate::wire::reexports::binary_sv2::GetSize for $name {
            fn get_size(&self) -> usize {
                match self { $( Self::$variant(m) => m.get_size(), )* }
            }
        }

        impl<'a> From<$name> for $crate::wire::reexports::binary_sv2::encodable::EncodableField<'a> {
            fn from(m: $name) -> Self {
                match m { $( $name::$variant(m) => m.into(), )* }
            }
        }

        $(
            impl From<$owned> for $name {
                fn from(m: $owned) -> Self {
                    Self::$variant(m)
                }
            }
        )*
    };
}

/// A `Str0255` holding `s`, or an error naming `field` when `s` is longer
/// than 255 bytes.
pub fn str0255(field: &'static str, s: &str) -> Result<binary_sv2::Str0255Owned, EncodeError> {
    binary_sv2::Str0255Owned::new(s.as_bytes().to_vec()).map_err(|_| EncodeError {
        message: field,
        reason: format!("{} bytes, at most 255 fit", s.len()),
    })
}

/// A `Str0255` holding `s` cut to at most 255 bytes at a character boundary,
/// for human-readable text such as error messages.
pub fn str0255_truncated(s: &str) -> binary_sv2::Str0255Owned {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    binary_sv2::Str0255Owned::new(s.as_bytes()[..end].to_vec()).expect("at most 255 bytes")
}

/// Checks every decoder of a message set against hostile input. Used by the
/// protocol crates' tests; `golden` is a valid plaintext frame of the set.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// Panics unless `msg` encodes to exactly `golden_hex` (a whole plaintext
    /// frame), `golden_hex` decodes to exactly `msg`, and hostile variations
    /// of it are refused.
    pub fn assert_golden<M: MessageSet>(msg: M, golden_hex: &str) {
        let golden = hex::decode(golden_hex).expect("golden vector is hex");
        let encoded = msg.clone().to_frame_bytes().expect("encodes");
        assert_eq!(
            hex::encode(&encoded),
            golden_hex,
            "the wire format of {} changed",
            msg.name()
        );
        let mut bytes = golden.clone();
        assert_eq!(M::decode_frame(&mut bytes).expect("golden decodes"), msg);
        assert_rejects_hostile_input::<M>(&golden);
    }

    /// Panics unless `golden` decodes, and every truncation, extension,
    /// flipped channel bit, wrong extension type and unknown message type of
    /// it is refused with an error (never a panic).
    pub fn assert_rejects_hostile_input<M: MessageSet>(golden: &[u8]) {
        let mut frame = golden.to_vec();
        let decoded = M::decode_frame(&mut frame).expect("the golden frame decodes");
        let msg_type = decoded.message_type();
        let payload = &golden[Header::SIZE..];

        for len in 0..payload.len() {
            let mut cut = payload[..len].to_vec();
            assert!(
                M::decode_payload(msg_type, M::CHANNEL_MSG, &mut cut).is_err(),
                "{} truncated to {len} of {} bytes decoded",
                decoded.name(),
                payload.len()
            );
        }
        for extra in [1usize, 7, 300] {
            let mut long = payload.to_vec();
            long.extend(std::iter::repeat_n(0xA5, extra));
            assert!(
                matches!(
                    M::decode_payload(msg_type, M::CHANNEL_MSG, &mut long),
                    Err(DecodeError::TrailingBytes { .. })
                ),
                "{} with {extra} trailing bytes decoded",
                decoded.name()
            );
        }
        let mut same = payload.to_vec();
        assert!(matches!(
            M::decode_payload(msg_type, !M::CHANNEL_MSG, &mut same),
            Err(DecodeError::WrongChannelBit { .. })
        ));

        // The same frame under another extension type is not ours.
        let mut other_ext = golden.to_vec();
        other_ext[0] ^= 0x02;
        assert!(matches!(
            M::decode_frame(&mut other_ext),
            Err(DecodeError::WrongExtension { .. })
        ));
        // A header announcing a longer or shorter payload than present.
        let mut short_header = golden.to_vec();
        short_header.pop();
        assert!(M::decode_frame(&mut short_header).is_err());
        assert!(M::decode_frame(&mut golden[..Header::SIZE - 1].to_vec()).is_err());
    }

    /// Feeds `bytes` to every decoder of the set: as the payload of every
    /// message type with either channel bit, and as a whole frame. Panics if
    /// a decoder panics, or if a message decoded from a payload does not
    /// encode back to a payload of the same length. The property tests and
    /// the fuzz targets share this.
    pub fn decode_every_type<M: MessageSet>(bytes: &[u8]) {
        for msg_type in 0..=u8::MAX {
            for channel_msg in [false, true] {
                if let Ok(m) = M::decode_payload(msg_type, channel_msg, &mut bytes.to_vec()) {
                    let frame = m.to_frame_bytes().expect("a decoded message encodes");
                    assert_eq!(frame[Header::SIZE..].len(), bytes.len());
                }
            }
        }
        let _ = M::decode_frame(&mut bytes.to_vec());
    }

    /// `golden_hex` as bytes, with each `(pos, byte)` of `flips` written at
    /// `pos` modulo the length.
    pub fn mutated(golden_hex: &str, flips: &[(usize, u8)]) -> Vec<u8> {
        let mut frame = hex::decode(golden_hex).expect("golden vector is hex");
        let len = frame.len();
        for &(pos, byte) in flips {
            frame[pos % len] = byte;
        }
        frame
    }

    /// sha256d of the Bitcoin genesis block header, little-endian (the
    /// order SV2 messages carry hashes in): a real hash for test vectors.
    pub fn genesis_hash() -> [u8; 32] {
        let mut h: [u8; 32] =
            hex::decode("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f")
                .expect("hex")
                .try_into()
                .expect("32 bytes");
        h.reverse();
        h
    }
}

/// The property tests every message set gets: neither random bytes nor
/// golden frames with random bytes overwritten make a decoder panic.
/// `$golden_frames` is a list of valid frames (hex) of `$set`; the calling
/// crate needs `proptest` (a dev-dependency).
#[doc(hidden)]
#[macro_export]
macro_rules! hostile_input_proptests {
    ($set:ty, $golden_frames:expr) => {
        proptest::proptest! {
            #[test]
            fn random_bytes_never_panic(
                bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)
            ) {
                $crate::wire::testing::decode_every_type::<$set>(&bytes);
            }

            #[test]
            fn mutated_frames_never_panic(
                which in 0..$golden_frames.len(),
                flips in proptest::collection::vec(
                    (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()),
                    1..8
                )
            ) {
                let frame = $crate::wire::testing::mutated($golden_frames[which], &flips);
                $crate::wire::testing::decode_every_type::<$set>(&frame);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str0255_refuses_long_strings_and_truncated_cuts_at_char_boundary() {
        assert!(str0255("quote_id", &"a".repeat(255)).is_ok());
        let err = str0255("quote_id", &"a".repeat(256)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot frame quote_id: 256 bytes, at most 255 fit"
        );
        // 127 two-byte characters (254 bytes) and then one more: cut before it.
        let s = "é".repeat(128);
        assert_eq!(str0255_truncated(&s).as_bytes().len(), 254);
        assert_eq!(str0255_truncated("short").as_bytes(), b"short");
    }
}
