use super::*;
use crate::crypto;
use crate::policy::Policy;

/// A small deterministic generator: the same values on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn string(&mut self, alphabet: Alphabet, len: usize) -> Vec<u8> {
        let chars = alphabet.chars();
        (0..len).map(|_| chars[self.below(chars.len())]).collect()
    }

    /// A Luhn-valid number of `len` digits.
    fn pan(&mut self, len: usize) -> Vec<u8> {
        let mut digits: Vec<u16> = (0..len).map(|_| (self.next() % 10) as u16).collect();
        while !luhn_valid(&digits) {
            digits[len - 1] = (digits[len - 1] + 1) % 10;
        }
        digits.iter().map(|&d| b'0' + d as u8).collect()
    }
}

fn key(spec: KeySpec) -> KeyMaterial {
    crypto::generate(&Policy::default().approve(Purpose::Tokenize, spec).unwrap()).unwrap()
}

fn tokenizer<'k>(
    key: &'k KeyMaterial,
    format: TokenFormat,
    ctx: &EncryptionContext,
) -> Tokenizer<'k> {
    let approved = Policy::default()
        .approve(Purpose::Tokenize, key.spec())
        .unwrap();
    Tokenizer::new(&approved, key, format, ctx).unwrap()
}

fn detokenizer(key: &KeyMaterial, format: TokenFormat, ctx: &EncryptionContext) -> Detokenizer {
    let approved = Policy::default()
        .approve_open(Purpose::Tokenize, key.spec())
        .unwrap();
    Detokenizer::new(&approved, key, format, ctx).unwrap()
}

fn digits_of(s: &[u8]) -> Vec<u16> {
    s.iter().map(|c| u16::from(c - b'0')).collect()
}

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs.iter().map(|(k, v)| (*k, *v)).collect()
}

#[track_caller]
fn refused(r: Result<SecretBytes, Error>, field: &str, needle: &str) {
    match r {
        Err(Error::InvalidArgument(e)) => {
            assert_eq!(e.field, field, "{e}");
            assert!(e.problem.contains(needle), "{e} does not say {needle:?}");
        }
        other => panic!("expected invalid {field}, got {other:?}"),
    }
}

#[test]
fn formats_parse_by_name_and_say_which_exist() {
    for f in TokenFormat::ALL {
        assert_eq!(TokenFormat::parse(f.name()).unwrap(), f);
        assert_eq!(
            TokenFormat::parse(&f.name().to_uppercase()).unwrap(),
            f,
            "case is ignored"
        );
    }
    let e = TokenFormat::parse("pan-luhn").unwrap_err();
    assert_eq!(e.field, "format");
    assert!(
        e.problem
            .contains("digits, alphanumeric, pan, pan-luhn-invalid")
    );
    assert_eq!(
        TokenFormat::ALL.map(TokenFormat::min_len),
        [6, 4, 16, 16],
        "the shortest values reaching a domain of 10^6"
    );
}

#[test]
fn luhn_check_known_numbers() {
    assert!(luhn_valid(&digits_of(b"4111111111111111")));
    assert!(luhn_valid(&digits_of(b"79927398713")));
    assert!(!luhn_valid(&digits_of(b"4111111111111112")));
    assert!(!luhn_valid(&digits_of(b"79927398710")));
}

#[test]
fn every_format_round_trips_under_both_ff1_specs() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let context = ctx(&[("table", "cards"), ("column", "pan")]);
    for spec in [KeySpec::Sm4Ff1, KeySpec::Aes256Ff1] {
        let k = key(spec);
        for format in TokenFormat::ALL {
            let t = tokenizer(&k, format, &context);
            assert!(t.reversible());
            let d = detokenizer(&k, format, &context);
            for _ in 0..40 {
                let value = match format {
                    TokenFormat::Digits => {
                        let len = 6 + rng.below(30);
                        rng.string(Alphabet::Digits, len)
                    }
                    TokenFormat::Alphanumeric => {
                        let len = 4 + rng.below(30);
                        rng.string(Alphabet::Alphanumeric, len)
                    }
                    TokenFormat::Pan | TokenFormat::PanLuhnInvalid => {
                        let len = 16 + rng.below(4);
                        rng.pan(len)
                    }
                };
                let token = t.tokenize(&value).unwrap();
                assert_eq!(token.len(), value.len(), "{spec} {format:?}");
                assert!(
                    token
                        .expose_secret()
                        .iter()
                        .all(|c| format.alphabet().chars().contains(c))
                );
                assert_eq!(
                    t.tokenize(&value).unwrap().expose_secret(),
                    token.expose_secret(),
                    "deterministic"
                );
                let back = d.detokenize(token.expose_secret()).unwrap();
                assert_eq!(back.expose_secret(), value.as_slice(), "{spec} {format:?}");
            }
        }
    }
}

/// Every `pan` token is Luhn-valid and every `pan-luhn-invalid` token fails the check; both
/// keep the first 6 and last 4 digits and the length; and tokens are spread over the middle.
#[test]
fn pan_tokens_keep_head_and_tail_and_have_the_luhn_property_asked_for() {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let k = key(KeySpec::Sm4Ff1);
    let p = key(KeySpec::HmacSm3);
    let context = EncryptionContext::default();
    for format in [TokenFormat::Pan, TokenFormat::PanLuhnInvalid] {
        let want_valid = format == TokenFormat::Pan;
        for key in [&k, &p] {
            let t = tokenizer(key, format, &context);
            let mut middles = std::collections::HashSet::new();
            for i in 0..300 {
                let pan = rng.pan(16 + i % 4);
                let token = t.tokenize(&pan).unwrap();
                let token = token.expose_secret();
                assert_eq!(token.len(), pan.len());
                assert_eq!(token[..6], pan[..6], "first six kept");
                assert_eq!(
                    token[pan.len() - 4..],
                    pan[pan.len() - 4..],
                    "last four kept"
                );
                assert_eq!(luhn_valid(&digits_of(token)), want_valid, "{format:?}");
                middles.insert(token[6..pan.len() - 4].to_vec());
            }
            assert!(
                middles.len() > 290,
                "tokens collide too often: {}",
                middles.len()
            );
        }
    }
}

#[test]
fn domains_below_a_million_are_refused_saying_so() {
    let k = key(KeySpec::Sm4Ff1);
    let p = key(KeySpec::HmacSm3);
    let c = EncryptionContext::default();
    for key in [&k, &p] {
        let digits = tokenizer(key, TokenFormat::Digits, &c);
        refused(
            digits.tokenize(b"12345"),
            "value",
            "(10^5 = 100000) is below the minimum of 10^6",
        );
        assert!(digits.tokenize(b"123456").is_ok(), "10^6 is enough");
        let alnum = tokenizer(key, TokenFormat::Alphanumeric, &c);
        refused(
            alnum.tokenize(b"aB9"),
            "value",
            "(62^3 = 238328) is below the minimum of 10^6",
        );
        assert!(alnum.tokenize(b"aB9z").is_ok());
        let pan = tokenizer(key, TokenFormat::Pan, &c);
        // 15 digits (American Express): 5 left to tokenise.
        let mut rng = Rng(7);
        refused(
            pan.tokenize(&rng.pan(15)),
            "value",
            "(10^5 = 100000) is below the minimum of 10^6 (NIST SP 800-38G Rev. 1); a PAN keeps \
             its first 6 and last 4 digits, so format pan needs at least 16 digits",
        );
        assert!(pan.tokenize(&rng.pan(16)).is_ok());
    }
    // Tokens are held to the same rule.
    refused(
        detokenizer(&k, TokenFormat::Digits, &c).detokenize(b"12345"),
        "token",
        "below the minimum of 10^6",
    );
}

#[test]
fn values_outside_the_alphabet_empty_or_too_long_are_refused_by_position() {
    let k = key(KeySpec::Aes256Ff1);
    let c = EncryptionContext::default();
    let digits = tokenizer(&k, TokenFormat::Digits, &c);
    refused(
        digits.tokenize(b"1234a678"),
        "value",
        "character 5 is outside the digits alphabet (0-9) of format digits",
    );
    refused(
        digits.tokenize(b"123 456"),
        "value",
        "character 4 is outside",
    );
    refused(
        digits.tokenize("12345６".as_bytes()),
        "value",
        "character 6 is outside",
    );
    refused(digits.tokenize(b""), "value", "is empty");
    refused(
        digits.tokenize(&[b'1'; MAX_VALUE_CHARS + 1]),
        "value",
        "is longer than 256 characters",
    );
    assert!(digits.tokenize(&[b'1'; MAX_VALUE_CHARS]).is_ok());
    let alnum = tokenizer(&k, TokenFormat::Alphanumeric, &c);
    refused(
        alnum.tokenize(b"abc-def"),
        "value",
        "character 4 is outside the alphanumeric alphabet (0-9, A-Z, a-z)",
    );
    let pan = tokenizer(&k, TokenFormat::Pan, &c);
    refused(
        pan.tokenize(b"4111 1111 1111 1111"),
        "value",
        "character 5 is outside",
    );
    refused(
        pan.tokenize(b"41111111111111111111"),
        "value",
        "has 20 digits; a PAN has 13 to 19",
    );
    refused(pan.tokenize(b"411111111111"), "value", "has 12 digits");
}

#[test]
fn pans_failing_luhn_and_tokens_of_the_wrong_kind_are_refused() {
    let k = key(KeySpec::Sm4Ff1);
    let c = EncryptionContext::default();
    let pan = tokenizer(&k, TokenFormat::Pan, &c);
    refused(
        pan.tokenize(b"4111111111111112"),
        "value",
        "fails the Luhn check",
    );
    let valid_token = pan.tokenize(b"4111111111111111").unwrap();
    let invalid = tokenizer(&k, TokenFormat::PanLuhnInvalid, &c);
    let invalid_token = invalid.tokenize(b"4111111111111111").unwrap();
    refused(
        detokenizer(&k, TokenFormat::Pan, &c).detokenize(invalid_token.expose_secret()),
        "token",
        "fails the Luhn check, so it is not a token of format pan",
    );
    refused(
        detokenizer(&k, TokenFormat::PanLuhnInvalid, &c).detokenize(valid_token.expose_secret()),
        "token",
        "passes the Luhn check, so it is not a token of format pan-luhn-invalid",
    );
    // A Luhn-invalid number that no step back repairs is no pan-luhn-invalid token either.
    let mut digits = digits_of(b"4111111111111111");
    step_last_middle(&mut digits, 2);
    let odd: Vec<u8> = digits.iter().map(|&d| b'0' + d as u8).collect();
    refused(
        detokenizer(&k, TokenFormat::PanLuhnInvalid, &c).detokenize(&odd),
        "token",
        "is not a token of format pan-luhn-invalid",
    );
}

/// The tweak binds the context and the format: the same value gets unrelated tokens, and a
/// token detokenised under another context does not give the value back.
#[test]
fn context_and_format_are_bound_into_the_token() {
    let k = key(KeySpec::Sm4Ff1);
    let a = ctx(&[("tenant", "a")]);
    let b = ctx(&[("tenant", "b")]);
    let value = b"6222020200112233445";
    let ta = tokenizer(&k, TokenFormat::Digits, &a)
        .tokenize(value)
        .unwrap();
    let tb = tokenizer(&k, TokenFormat::Digits, &b)
        .tokenize(value)
        .unwrap();
    assert_ne!(ta.expose_secret(), tb.expose_secret());
    let wrong = detokenizer(&k, TokenFormat::Digits, &b)
        .detokenize(ta.expose_secret())
        .unwrap();
    assert_ne!(wrong.expose_secret(), value);
    let pan = tokenizer(&k, TokenFormat::Pan, &a)
        .tokenize(b"6212345678901232")
        .unwrap_or_else(|e| panic!("{e}"));
    let digits = tokenizer(&k, TokenFormat::Digits, &a)
        .tokenize(b"6212345678901232")
        .unwrap();
    assert_ne!(pan.expose_secret(), digits.expose_secret());
    // Another key version (another key) gives another token.
    let k2 = key(KeySpec::Sm4Ff1);
    let other = tokenizer(&k2, TokenFormat::Digits, &a)
        .tokenize(value)
        .unwrap();
    assert_ne!(other.expose_secret(), ta.expose_secret());
}

#[test]
fn pseudonyms_are_deterministic_keep_the_format_and_are_one_way() {
    let p = key(KeySpec::HmacSm3);
    let c = ctx(&[("purpose", "test-data")]);
    let mut rng = Rng(99);
    for format in TokenFormat::ALL {
        let t = tokenizer(&p, format, &c);
        assert!(!t.reversible());
        for len in [16, 19, 40] {
            let value = match format {
                TokenFormat::Pan | TokenFormat::PanLuhnInvalid => rng.pan(len.min(19)),
                TokenFormat::Digits | TokenFormat::Alphanumeric => {
                    rng.string(format.alphabet(), len)
                }
            };
            let one = t.tokenize(&value).unwrap();
            assert_eq!(
                t.tokenize(&value).unwrap().expose_secret(),
                one.expose_secret()
            );
            assert_eq!(one.len(), value.len());
            assert_ne!(one.expose_secret(), value.as_slice());
            let other = tokenizer(&p, format, &ctx(&[("purpose", "other")]))
                .tokenize(&value)
                .unwrap();
            assert_ne!(other.expose_secret(), one.expose_secret(), "context bound");
        }
    }
    // No way back: a pseudonym key makes no detokenizer.
    let approved = Policy::default()
        .approve_open(Purpose::Tokenize, KeySpec::HmacSm3)
        .unwrap();
    assert!(matches!(
        Detokenizer::new(&approved, &p, TokenFormat::Digits, &c),
        Err(CryptoError::Mismatch)
    ));
    // Numerals are drawn without bias: each digit about a tenth of the time.
    let t = tokenizer(&p, TokenFormat::Digits, &c);
    let mut counts = [0u32; 10];
    for i in 0..2000u32 {
        let value = format!("{:08}", i);
        for &d in t.tokenize(value.as_bytes()).unwrap().expose_secret() {
            counts[usize::from(d - b'0')] += 1;
        }
    }
    // 16 000 digits: 1600 expected each, 4 standard deviations is about 150.
    assert!(
        counts.iter().all(|&n| (1450..=1750).contains(&n)),
        "{counts:?}"
    );
}

#[test]
fn only_tokenize_keys_approved_for_tokenize_make_tokenizers() {
    let policy = Policy::default();
    let k = key(KeySpec::Sm4Ff1);
    let c = EncryptionContext::default();
    // An approval for another spec than the key's.
    let aes = policy
        .approve(Purpose::Tokenize, KeySpec::Aes256Ff1)
        .unwrap();
    assert!(matches!(
        Tokenizer::new(&aes, &k, TokenFormat::Digits, &c),
        Err(CryptoError::Mismatch)
    ));
    // An encrypt key under an encrypt approval is no tokenizer either.
    let enc = policy.approve(Purpose::Encrypt, KeySpec::Sm4Gcm).unwrap();
    let gcm = crypto::generate(&enc).unwrap();
    assert!(matches!(
        Tokenizer::new(&enc, &gcm, TokenFormat::Digits, &c),
        Err(CryptoError::Mismatch)
    ));
    // And the policy refuses the purpose for specs that do not serve it.
    assert!(policy.approve(Purpose::Tokenize, KeySpec::Sm4Gcm).is_err());
    assert!(
        policy
            .approve(Purpose::Tokenize, KeySpec::HmacSha256)
            .is_err()
    );
    assert!(policy.approve(Purpose::Encrypt, KeySpec::Sm4Ff1).is_err());
}

#[test]
fn check_value_is_the_requests_check() {
    assert!(check_value(TokenFormat::Digits, b"123456").is_ok());
    assert_eq!(
        check_value(TokenFormat::Digits, b"").unwrap_err().problem,
        "is empty"
    );
    assert!(check_value(TokenFormat::Pan, b"4111111111111111").is_ok());
    assert!(check_value(TokenFormat::Pan, b"4111111111111112").is_err());
}
