//! Guest nicknames: `형용사_명사_NNNN` from lists of real Korean words.

use rand::Rng;

/// Adjectives in their attributive form, so that `adjective noun` reads naturally.
const ADJECTIVES: &[&str] = &[
    "차분한",
    "용감한",
    "조용한",
    "따뜻한",
    "느긋한",
    "상냥한",
    "씩씩한",
    "엉뚱한",
    "수줍은",
    "반짝이는",
    "졸린",
    "배고픈",
    "행복한",
    "신나는",
    "푸른",
    "붉은",
    "하얀",
    "작은",
    "커다란",
    "부드러운",
    "날쌘",
    "다정한",
    "명랑한",
    "슬기로운",
    "고요한",
    "맑은",
    "포근한",
    "새침한",
    "든든한",
];

/// Everyday nouns.
const NOUNS: &[&str] = &[
    "구름",
    "바다",
    "고양이",
    "강아지",
    "여우",
    "토끼",
    "별",
    "달",
    "나무",
    "바람",
    "하늘",
    "사과",
    "호랑이",
    "다람쥐",
    "펭귄",
    "부엉이",
    "고래",
    "산",
    "강",
    "꽃",
    "나비",
    "곰",
    "참새",
    "거북이",
    "노을",
    "이슬",
    "소나무",
    "돌고래",
    "햇살",
    "눈사람",
];

/// A fresh nickname such as `차분한_구름_4821`.
pub fn generate(rng: &mut impl Rng) -> String {
    let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let noun = NOUNS[rng.random_range(0..NOUNS.len())];
    let number: u16 = rng.random_range(0..10_000);
    format!("{adjective}_{noun}_{number:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_hangul_word(word: &str) -> bool {
        !word.is_empty() && word.chars().all(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c))
    }

    #[test]
    fn word_lists_are_hangul() {
        for word in ADJECTIVES.iter().chain(NOUNS) {
            assert!(is_hangul_word(word), "{word:?} is not a Hangul word");
        }
    }

    #[test]
    fn shape() {
        let mut rng = rand::rng();
        for _ in 0..200 {
            let nickname = generate(&mut rng);
            let parts: Vec<&str> = nickname.split('_').collect();
            assert_eq!(parts.len(), 3, "{nickname}");
            assert!(ADJECTIVES.contains(&parts[0]), "{nickname}");
            assert!(NOUNS.contains(&parts[1]), "{nickname}");
            assert_eq!(parts[2].len(), 4, "{nickname}");
            assert!(parts[2].chars().all(|c| c.is_ascii_digit()), "{nickname}");
        }
    }
}
