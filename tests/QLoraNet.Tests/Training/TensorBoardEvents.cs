using Google.Protobuf;

namespace QLoraNet.Tests.Training;

/// <summary>
/// Reads TensorBoard event files back: TFRecord framing (uint64 length, uint32 masked CRC32C of the length, the
/// record, uint32 masked CRC of the record; little-endian) around Event protobufs, parsed with the Event message
/// classes TorchSharp generated from tensorflow/core/util/event.proto. CRCs are not checked (the length framing
/// is, by parsing every record).
/// </summary>
static class TensorBoardEvents
{
    public sealed record Scalar(string Tag, long Step, float Value);
    public sealed record Text(string Tag, long Step, string Value);

    public static List<Tensorboard.Event> Read(string directory)
    {
        var events = new List<Tensorboard.Event>();
        foreach (var file in Directory.GetFiles(directory, "events.out.tfevents.*", SearchOption.AllDirectories).Order())
        {
            using var r = new BinaryReader(File.OpenRead(file));
            while (r.BaseStream.Position < r.BaseStream.Length)
            {
                long length = r.ReadInt64();
                r.ReadUInt32();
                var record = r.ReadBytes(checked((int)length));
                Assert.Equal(length, record.Length);
                r.ReadUInt32();
                events.Add(Tensorboard.Event.Parser.ParseFrom(record));
            }
        }
        return events;
    }

    public static List<Scalar> Scalars(string directory) => Read(directory)
        .Where(e => e.Summary is not null)
        .SelectMany(e => e.Summary.Value.Where(v => v.ValueCase == Tensorboard.Summary.Types.Value.ValueOneofCase.SimpleValue)
            .Select(v => new Scalar(v.Tag, e.Step, v.SimpleValue)))
        .ToList();

    public static List<Text> Texts(string directory) => Read(directory)
        .Where(e => e.Summary is not null)
        .SelectMany(e => e.Summary.Value.Where(v => v.Tensor is not null && v.Tensor.StringVal.Count > 0)
            .Select(v => new Text(v.Tag, e.Step, v.Tensor.StringVal[0].ToStringUtf8())))
        .ToList();
}
