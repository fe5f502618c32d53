//! The generated services' codec: prost's, except that a message that does not decode is the
//! sender's fault — INVALID_ARGUMENT, as the API promises for bad input — rather than prost's
//! INTERNAL, which would tell an operator the server broke and send them to its logs.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with decode failures reported as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct KmsCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for KmsCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for KmsCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = KmsDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        KmsDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// Prost's decoder; its only error is a message that does not decode.
#[derive(Debug)]
pub struct KmsDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for KmsDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            Status::invalid_argument(format!(
                "the message is not valid protobuf for this method: {}",
                s.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
