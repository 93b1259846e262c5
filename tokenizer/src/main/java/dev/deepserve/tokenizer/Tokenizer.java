package dev.deepserve.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A Hugging Face byte-level BPE tokenizer ({@code tokenizer.json} + {@code tokenizer_config.json}) in pure Java,
 * producing the ids the Hugging Face {@code tokenizers} library produces. Thread-safe: one instance serves all requests.
 *
 * <p>{@link #encode} adds no special tokens (DeepSeek's chat template writes the BOS itself); added tokens that appear
 * in the text, such as {@code <｜User｜>}, are recognized as themselves. Lone UTF-16 surrogates, which UTF-8 cannot
 * carry, are read as U+FFFD.
 */
public final class Tokenizer {

    private static final ObjectMapper JSON = new ObjectMapper();

    private final String[] idToToken;
    private final Bpe bpe;
    private final AddedVocabulary added;
    private final PreTokenizer.Steps preTokenizer;
    private final Normalizer.Form normalizer;
    private final ChatTemplate chatTemplate;
    private final String bosToken;
    private final String eosToken;
    /** The model vocabulary (shared with the BPE, never changed) and the added tokens, which take precedence. */
    private final Map<String, Integer> tokenToId;
    private final Map<String, Integer> addedToId;
    private final long vocabBytes;

    private Tokenizer(Vocabulary v, boolean fastSplit) {
        this.normalizer = v.normalizer() == null ? null : Normalizer.Form.valueOf(v.normalizer());
        try {
            this.preTokenizer = PreTokenizer.parse(JSON.readTree(v.preTokenizerJson()), fastSplit);
        } catch (IOException e) {
            throw new TokenizerFormatException("pre_tokenizer is not valid JSON: " + e.getMessage());
        }
        Map<String, Integer> vocab = v.vocab();
        int maxId = -1;
        for (int id : vocab.values()) {
            maxId = Math.max(maxId, id);
        }
        for (AddedVocabulary.Token t : v.added()) {
            maxId = Math.max(maxId, t.id());
        }
        this.added = new AddedVocabulary(v.added());
        this.idToToken = new String[maxId + 1];
        long bytes = 0;
        for (Map.Entry<String, Integer> e : vocab.entrySet()) {
            idToToken[e.getValue()] = e.getKey();
            bytes += 40 + 2L * e.getKey().length();
        }
        for (AddedVocabulary.Token t : v.added()) {
            idToToken[t.id()] = t.content();
        }
        this.tokenToId = vocab;
        this.addedToId = new HashMap<>();
        v.added().forEach(t -> addedToId.put(t.content(), t.id()));

        int[] byteIds = new int[256];
        for (int b = 0; b < 256; b++) {
            Integer id = vocab.get(String.valueOf(ByteLevel.BYTE_TO_CHAR[b]));
            if (id == null) {
                throw new TokenizerFormatException("model.vocab lacks the byte-level symbol for byte " + b + " ('" + ByteLevel.BYTE_TO_CHAR[b] + "')");
            }
            byteIds[b] = id;
        }
        this.bpe = new Bpe(byteIds, v.merges(), vocab, v.ignoreMerges());
        this.vocabBytes = bytes + bpe.memoryBytes();

        JsonNode config;
        try {
            config = JSON.readTree(v.configJson());
        } catch (IOException e) {
            throw new TokenizerFormatException("tokenizer_config.json is not valid JSON: " + e.getMessage());
        }
        this.bosToken = tokenText(config, "bos_token");
        this.eosToken = tokenText(config, "eos_token");
        this.chatTemplate = ChatTemplate.from(config, bosToken, eosToken);
    }

    /** What a tokenizer is built from, read out of {@code tokenizer.json} (checked here) and the config's text. */
    static Vocabulary parse(JsonNode json, String configJson) {
        JsonNode model = json.path("model");
        String type = model.path("type").asText("BPE");
        if (!type.equals("BPE")) {
            throw new TokenizerFormatException("model.type '" + type + "' is not supported (expected BPE)");
        }
        if (model.hasNonNull("dropout") && model.get("dropout").asDouble() != 0) {
            throw new TokenizerFormatException("model.dropout is set: BPE dropout is not supported");
        }
        if (model.path("byte_fallback").asBoolean(false)) {
            throw new TokenizerFormatException("model.byte_fallback true is not supported (byte-level BPE only)");
        }
        if (model.hasNonNull("continuing_subword_prefix") || model.hasNonNull("end_of_word_suffix")) {
            throw new TokenizerFormatException("model.continuing_subword_prefix / end_of_word_suffix are not supported");
        }
        String decoder = json.path("decoder").path("type").asText("");
        if (!decoder.equals("ByteLevel")) {
            throw new TokenizerFormatException("decoder type '" + decoder + "' is not supported (expected ByteLevel)");
        }
        Normalizer.Form normalizer = normalizer(json.get("normalizer"));
        JsonNode pre = json.get("pre_tokenizer");
        PreTokenizer.parse(pre, true); // refuses what it does not support, by name, before anything else is built

        JsonNode vocabNode = model.path("vocab");
        if (!vocabNode.isObject() || vocabNode.isEmpty()) {
            throw new TokenizerFormatException("model.vocab is missing or empty");
        }
        Map<String, Integer> vocab = new HashMap<>(vocabNode.size() * 2);
        for (Map.Entry<String, JsonNode> e : vocabNode.properties()) {
            vocab.put(e.getKey(), e.getValue().asInt());
        }
        List<AddedVocabulary.Token> addedTokens = new ArrayList<>();
        for (JsonNode t : json.path("added_tokens")) {
            if (t.path("single_word").asBoolean(false)) {
                throw new TokenizerFormatException("added token '" + t.path("content").asText() + "' has single_word true, which is not supported");
            }
            addedTokens.add(new AddedVocabulary.Token(t.path("id").asInt(), t.path("content").asText(), t.path("special").asBoolean(false),
                    t.path("lstrip").asBoolean(false), t.path("rstrip").asBoolean(false), t.path("normalized").asBoolean(!t.path("special").asBoolean(false))));
        }
        JsonNode mergesNode = model.path("merges");
        long[][] merges = new long[mergesNode.size()][];
        for (int r = 0; r < merges.length; r++) {
            JsonNode m = mergesNode.get(r);
            String left;
            String right;
            if (m.isArray() && m.size() == 2) {
                left = m.get(0).asText();
                right = m.get(1).asText();
            } else {
                String s = m.asText();
                int sp = s.indexOf(' ', 1);
                if (sp < 0) {
                    throw new TokenizerFormatException("model.merges[" + r + "] '" + s + "' is not two symbols");
                }
                left = s.substring(0, sp);
                right = s.substring(sp + 1);
            }
            Integer l = vocab.get(left);
            Integer rt = vocab.get(right);
            Integer merged = vocab.get(left + right);
            if (l == null || rt == null || merged == null) {
                throw new TokenizerFormatException("model.merges[" + r + "] '" + left + " " + right + "' uses a symbol missing from model.vocab");
            }
            merges[r] = new long[] {Bpe.pair(l, rt), merged};
        }
        return new Vocabulary(normalizer == null ? null : normalizer.name(), pre == null ? "null" : pre.toString(), vocab, addedTokens, merges,
                model.path("ignore_merges").asBoolean(false), configJson);
    }

    /**
     * Loads {@code tokenizer.json} and, when present, {@code tokenizer_config.json} from a model directory — from the
     * prebuilt binary vocabulary next to them when its checksum says it was built from these very files (see
     * {@link PrebuiltVocabulary}), else from the JSON, writing the prebuilt form for the next start.
     */
    public static Tokenizer load(Path modelDir) {
        return load(modelDir, true);
    }

    /** As {@link #load(Path)}; {@code fastSplit false} uses the regex pre-tokenizer path (the reference in tests). */
    public static Tokenizer load(Path modelDir, boolean fastSplit) {
        Vocabulary v = PrebuiltVocabulary.load(modelDir);
        try {
            return new Tokenizer(v, fastSplit);
        } catch (RuntimeException e) {
            // a prebuilt file this code cannot build from (it passed its checks): the JSON decides, and says why if bad
            return new Tokenizer(PrebuiltVocabulary.Sources.read(modelDir).parse(), fastSplit);
        }
    }

    /**
     * The version of what {@link #parse} produces; part of the prebuilt vocabulary's key, so a release that reads
     * tokenizer.json differently never serves a file an earlier one wrote. Bump it with any change to {@link #parse}.
     */
    static final int PARSER_VERSION = 1;

    /** Reads the two JSON files, ignoring any prebuilt form (tests compare the two paths). */
    static Vocabulary parseJson(Path modelDir) {
        return PrebuiltVocabulary.Sources.read(modelDir).parse();
    }

    /** Parses the bytes of tokenizer.json and of tokenizer_config.json (null when there is none). */
    static Vocabulary parseJson(Path modelDir, byte[] tokenizer, byte[] config) {
        JsonNode json;
        String configText;
        try {
            json = JSON.readTree(tokenizer);
        } catch (IOException e) {
            throw new TokenizerFormatException(modelDir.resolve("tokenizer.json") + " is not valid JSON: " + e.getMessage());
        }
        try {
            configText = config == null ? "{}" : JSON.readTree(config).toString();
        } catch (IOException e) {
            throw new TokenizerFormatException(modelDir.resolve("tokenizer_config.json") + " is not valid JSON: " + e.getMessage());
        }
        return parse(json, configText);
    }

    /** A tokenizer from its parsed parts. */
    static Tokenizer of(Vocabulary v, boolean fastSplit) {
        return new Tokenizer(v, fastSplit);
    }

    private static Normalizer.Form normalizer(JsonNode n) {
        if (n == null || n.isNull()) {
            return null;
        }
        String type = n.path("type").asText();
        if (type.equals("Sequence")) {
            JsonNode list = n.path("normalizers");
            if (list.isEmpty()) {
                return null;
            }
            if (list.size() == 1) {
                return normalizer(list.get(0));
            }
            throw new TokenizerFormatException("normalizer: a Sequence of " + list.size() + " normalizers is not supported");
        }
        return switch (type) {
            case "NFC" -> Normalizer.Form.NFC;
            case "NFD" -> Normalizer.Form.NFD;
            case "NFKC" -> Normalizer.Form.NFKC;
            case "NFKD" -> Normalizer.Form.NFKD;
            default -> throw new TokenizerFormatException("normalizer type '" + type + "' is not supported (supported: NFC, NFD, NFKC, NFKD, empty Sequence)");
        };
    }

    private static String tokenText(JsonNode config, String field) {
        JsonNode t = config.get(field);
        if (t == null || t.isNull()) {
            return null;
        }
        return t.isObject() ? t.path("content").asText() : t.asText();
    }

    /** Token ids of {@code text}, no special tokens added. */
    public int[] encode(String text) {
        String clean = replaceLoneSurrogates(text);
        IntList out = new IntList(clean.length() / 3 + 4);
        Pieces a = new Pieces();
        Pieces b = new Pieces();
        byte[] buf = new byte[64];
        for (AddedVocabulary.Segment s : added.split(clean)) {
            if (s.id() >= 0) {
                out.add(s.id());
                continue;
            }
            String segment = clean;
            int start = s.start();
            int end = s.end();
            if (normalizer != null || preTokenizer.addPrefixSpace()) {
                segment = clean.substring(start, end);
                if (normalizer != null) {
                    segment = Normalizer.normalize(segment, normalizer);
                }
                if (preTokenizer.addPrefixSpace() && !segment.startsWith(" ")) {
                    segment = " " + segment;
                }
                start = 0;
                end = segment.length();
            }
            Pieces pieces = preTokenizer.run(segment, start, end, a, b);
            for (int i = 0; i < pieces.size; i++) {
                int ps = pieces.start(i);
                int pe = pieces.end(i);
                buf = ensure(buf, 3 * (pe - ps));
                int n = utf8(segment, ps, pe, buf);
                bpe.encode(buf, n, out);
            }
        }
        return out.toArray();
    }

    private static byte[] ensure(byte[] buf, int n) {
        return buf.length >= n ? buf : new byte[Math.max(n, buf.length * 2)];
    }

    private static int utf8(String s, int start, int end, byte[] out) {
        int n = 0;
        for (int i = start; i < end; i++) {
            char c = s.charAt(i);
            if (c < 0x80) {
                out[n++] = (byte) c;
            } else if (c < 0x800) {
                out[n++] = (byte) (0xC0 | c >> 6);
                out[n++] = (byte) (0x80 | c & 0x3F);
            } else if (Character.isHighSurrogate(c) && i + 1 < end && Character.isLowSurrogate(s.charAt(i + 1))) {
                int cp = Character.toCodePoint(c, s.charAt(++i));
                out[n++] = (byte) (0xF0 | cp >> 18);
                out[n++] = (byte) (0x80 | cp >> 12 & 0x3F);
                out[n++] = (byte) (0x80 | cp >> 6 & 0x3F);
                out[n++] = (byte) (0x80 | cp & 0x3F);
            } else {
                out[n++] = (byte) (0xE0 | c >> 12);
                out[n++] = (byte) (0x80 | c >> 6 & 0x3F);
                out[n++] = (byte) (0x80 | c & 0x3F);
            }
        }
        return n;
    }

    static String replaceLoneSurrogates(String s) {
        StringBuilder sb = null;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            boolean lone = Character.isHighSurrogate(c) ? i + 1 >= s.length() || !Character.isLowSurrogate(s.charAt(i + 1))
                    : Character.isLowSurrogate(c) && (i == 0 || !Character.isHighSurrogate(s.charAt(i - 1)));
            if (Character.isHighSurrogate(c) && !lone) {
                if (sb != null) {
                    sb.append(c).append(s.charAt(i + 1));
                }
                i++;
                continue;
            }
            if (lone && sb == null) {
                sb = new StringBuilder(s.length()).append(s, 0, i);
            }
            if (sb != null) {
                sb.append(lone ? '\uFFFD' : c);
            }
        }
        return sb == null ? s : sb.toString();
    }

    /** Text of the ids, as Hugging Face's byte-level decoder gives it (invalid UTF-8 becomes U+FFFD). */
    public String decode(int[] ids, boolean skipSpecialTokens) {
        ByteSink sink = new ByteSink();
        for (int id : ids) {
            appendBytes(id, skipSpecialTokens, sink);
        }
        return lossy(sink.bytes, 0, sink.size);
    }

    /** Appends the bytes a token stands for; false when the id is unknown. */
    boolean appendBytes(int id, boolean skipSpecial, ByteSink sink) {
        if (id < 0 || id >= idToToken.length || idToToken[id] == null) {
            throw new IllegalArgumentException("token id " + id + " is not in the vocabulary");
        }
        if (skipSpecial) {
            AddedVocabulary.Token t = added.byId(id);
            if (t != null && t.special()) {
                return false;
            }
        }
        String token = idToToken[id];
        int mark = sink.size;
        for (int i = 0; i < token.length(); i++) {
            int b = ByteLevel.toByte(token.charAt(i));
            if (b < 0) {
                sink.size = mark;
                byte[] raw = token.getBytes(StandardCharsets.UTF_8);
                sink.append(raw, raw.length);
                return true;
            }
            sink.append((byte) b);
        }
        return true;
    }

    /** UTF-8 decoding that replaces each maximal invalid subsequence with U+FFFD, as Rust's from_utf8_lossy does. */
    static String lossy(byte[] bytes, int from, int to) {
        CharsetDecoder d = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPLACE)
                .onUnmappableCharacter(CodingErrorAction.REPLACE).replaceWith("\uFFFD");
        try {
            CharBuffer c = d.decode(ByteBuffer.wrap(bytes, from, to - from));
            return c.toString();
        } catch (CharacterCodingException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A decoder for ids that arrive one at a time; see {@link StreamDecoder}. */
    public StreamDecoder streamDecoder(boolean skipSpecialTokens) {
        return new StreamDecoder(this, skipSpecialTokens);
    }

    public ChatTemplate chatTemplate() {
        if (chatTemplate == null) {
            throw new TokenizerFormatException("tokenizer_config.json has no chat_template");
        }
        return chatTemplate;
    }

    public boolean hasChatTemplate() {
        return chatTemplate != null;
    }

    /** Id of a token string (vocabulary or added token), or -1. */
    public int tokenId(String token) {
        Integer id = addedToId.get(token);
        if (id == null) {
            id = tokenToId.get(token);
        }
        return id == null ? -1 : id;
    }

    public String token(int id) {
        return id >= 0 && id < idToToken.length ? idToToken[id] : null;
    }

    public String bosToken() {
        return bosToken;
    }

    public String eosToken() {
        return eosToken;
    }

    public int bosId() {
        return bosToken == null ? -1 : tokenId(bosToken);
    }

    public int eosId() {
        return eosToken == null ? -1 : tokenId(eosToken);
    }

    /** Ids are below this. */
    public int vocabSize() {
        return idToToken.length;
    }

    /** Approximate heap held by the vocabulary and merge table. */
    public long memoryBytes() {
        return vocabBytes;
    }

    /** A growable byte array. */
    static final class ByteSink {
        byte[] bytes = new byte[64];
        int size;

        void append(byte b) {
            if (size == bytes.length) {
                bytes = java.util.Arrays.copyOf(bytes, size * 2);
            }
            bytes[size++] = b;
        }

        void append(byte[] b, int n) {
            if (size + n > bytes.length) {
                bytes = java.util.Arrays.copyOf(bytes, Math.max(bytes.length * 2, size + n));
            }
            System.arraycopy(b, 0, bytes, size, n);
            size += n;
        }
    }
}
