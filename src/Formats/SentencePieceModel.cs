using System.Text;

namespace QLoraNet.Formats;

/// <summary>
/// The vocabulary of a SentencePiece <c>tokenizer.model</c>: a serialized <c>ModelProto</c> protobuf
/// (google/sentencepiece src/sentencepiece_model.proto). Only what a GGUF vocabulary needs is read:
/// <code>
///   ModelProto   { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2; ... }
///   SentencePiece { string piece = 1; float score = 2; Type type = 3 [default NORMAL]; }
///   Type: NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6
///   TrainerSpec  { ModelType model_type = 3 [default UNIGRAM]; int32 unk_id = 40 [default 0]; bos_id = 41 [1];
///                  eos_id = 42 [2]; pad_id = 43 [-1]; ... }     ModelType: UNIGRAM = 1, BPE = 2, WORD = 3, CHAR = 4
/// </code>
/// Every other field is skipped by wire type, so newer model files with extra fields still parse.
/// The one reader of tokenizer.model in the project: the tokenizer (QLoraNet.Models.SentencePieceTextTokenizer)
/// takes <see cref="Serialized"/> from here, and the GGUF vocabulary the pieces.
/// </summary>
public sealed record SentencePieceModel(IReadOnlyList<SentencePieceModel.Piece> Pieces, int UnkId, int BosId, int EosId, int PadId)
{
    public enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    public sealed record Piece(string Text, float Score, PieceType Type);

    public enum ModelKind { Unigram = 1, Bpe = 2, Word = 3, Char = 4 }

    public const string FileName = "tokenizer.model";

    /// <summary>The segmentation algorithm (trainer_spec.model_type); Llama, Mistral and Gemma models are BPE.</summary>
    public ModelKind Kind { get; init; } = ModelKind.Unigram;

    /// <summary>The file's bytes, for a tokenizer library that parses the ModelProto itself.</summary>
    public byte[] Serialized { get; init; } = [];

    /// <summary>The tokenizer.model of a model directory (or the file itself); null when there is none.</summary>
    public static string? Find(string pathOrDir)
    {
        string path = Directory.Exists(pathOrDir) ? Path.Combine(pathOrDir, FileName) : pathOrDir;
        return File.Exists(path) ? path : null;
    }

    public static SentencePieceModel Load(string pathOrDir)
    {
        string path = Directory.Exists(pathOrDir) ? Path.Combine(pathOrDir, FileName) : pathOrDir;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not found (a Llama model directory needs its SentencePiece {FileName})", path);
        try
        {
            var bytes = UserFile.ReadBytes(path, 64L << 20, FileName);
            return Parse(bytes) with { Serialized = bytes };
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{path}: not a SentencePiece model ({e.Message})");
        }
    }

    public static SentencePieceModel Parse(ReadOnlySpan<byte> bytes)
    {
        var pieces = new List<Piece>();
        int unk = 0, bos = 1, eos = 2, pad = -1;
        var kind = ModelKind.Unigram;
        var r = new ProtoReader(bytes);
        while (!r.End)
        {
            var (field, wire) = r.Tag();
            if (field == 1 && wire == 2) pieces.Add(ParsePiece(r.LengthDelimited()));
            else if (field == 2 && wire == 2)
            {
                var spec = new ProtoReader(r.LengthDelimited());
                while (!spec.End)
                {
                    var (f, w) = spec.Tag();
                    if (w == 0 && f == 3) kind = (ModelKind)(int)spec.Varint();
                    else if (w == 0 && f is >= 40 and <= 43)
                    {
                        int id = (int)(long)spec.Varint();  // int32 fields: negative values are 10-byte varints
                        if (f == 40) unk = id; else if (f == 41) bos = id; else if (f == 42) eos = id; else pad = id;
                    }
                    else spec.Skip(w);
                }
            }
            else r.Skip(wire);
        }
        if (pieces.Count == 0) throw new InvalidDataException("no pieces (field 1) found");
        return new SentencePieceModel(pieces, unk, bos, eos, pad) { Kind = kind };
    }

    static Piece ParsePiece(ReadOnlySpan<byte> bytes)
    {
        string text = "";
        float score = 0f;
        var type = PieceType.Normal;
        var r = new ProtoReader(bytes);
        while (!r.End)
        {
            var (field, wire) = r.Tag();
            if (field == 1 && wire == 2)
            {
                var raw = r.LengthDelimited();
                if (!System.Text.Unicode.Utf8.IsValid(raw)) throw new InvalidDataException("a piece is not valid UTF-8");
                text = Encoding.UTF8.GetString(raw);
            }
            else if (field == 2 && wire == 5) score = BitConverter.ToSingle(r.Fixed32());
            else if (field == 3 && wire == 0)
            {
                ulong t = r.Varint();
                if (t is < 1 or > 6) throw new InvalidDataException($"piece type {t} is not a SentencePiece type (1-6)");
                type = (PieceType)(int)t;
            }
            else r.Skip(wire);
        }
        return new Piece(text, score, type);
    }

    /// <summary>Protobuf wire format (protobuf.dev/programming-guides/encoding): tags are varints (field &lt;&lt; 3 | wire type).</summary>
    ref struct ProtoReader(ReadOnlySpan<byte> data)
    {
        readonly ReadOnlySpan<byte> _data = data;
        int _pos;

        public readonly bool End => _pos >= _data.Length;

        public (int Field, int Wire) Tag()
        {
            ulong tag = Varint();
            return ((int)(tag >> 3), (int)(tag & 7));
        }

        public ulong Varint()
        {
            ulong v = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (_pos >= _data.Length) throw new InvalidDataException($"varint runs past the end at byte {_pos}");
                byte b = _data[_pos++];
                v |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) return v;
            }
            throw new InvalidDataException($"varint longer than 10 bytes at byte {_pos}");
        }

        public ReadOnlySpan<byte> LengthDelimited()
        {
            ulong n = Varint();
            if (n > (ulong)(_data.Length - _pos)) throw new InvalidDataException($"a field of {n} bytes runs past the end at byte {_pos}");
            var s = _data.Slice(_pos, (int)n);
            _pos += (int)n;
            return s;
        }

        public ReadOnlySpan<byte> Fixed32() => Take(4);

        ReadOnlySpan<byte> Take(int n)
        {
            if (_pos + n > _data.Length) throw new InvalidDataException($"a {n}-byte field runs past the end at byte {_pos}");
            var s = _data.Slice(_pos, n);
            _pos += n;
            return s;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: Take(8); break;
                case 2: LengthDelimited(); break;
                case 5: Take(4); break;
                default: throw new InvalidDataException($"unsupported protobuf wire type {wire} at byte {_pos}");
            }
        }
    }
}
