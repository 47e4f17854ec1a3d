namespace QLoraNet.Training.Config;

// The closed sets of values the YAML schema accepts. A member's YAML spelling is its name in lower case with a
// hyphen before each inner capital (Llama2Chat -> "llama2-chat"); see YamlNames.

/// <summary>Floating-point type of stored weights or of compute.</summary>
public enum DType { Bf16, Fp16, Fp32 }

/// <summary>Where the model runs; Auto picks CUDA when libtorch sees a GPU, else the CPU.</summary>
public enum DeviceKind { Auto, Cpu, Cuda }

/// <summary>How a data row is laid out: chat messages, an alpaca-style instruction triple, or raw text.</summary>
public enum DataFormat { Chat, Instruction, Completion }

/// <summary>The prompt template that turns chat/instruction rows into text; completion rows never use one.</summary>
public enum TemplateKind { Llama2Chat, Alpaca, None }

/// <summary>Learning-rate schedule after the linear warmup.</summary>
public enum SchedulerKind { Cosine, Linear, Constant }
