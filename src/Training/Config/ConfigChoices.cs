namespace QLoraNet.Training.Config;

// The closed sets of values the YAML schema accepts. A member's YAML spelling is its name in lower case with a
// hyphen before each inner capital (Llama2Chat -> "llama2-chat"); see YamlNames.

/// <summary>Floating-point type of stored weights or of compute.</summary>
public enum DType { Bf16, Fp16, Fp32 }

/// <summary>Where the model runs; Auto picks CUDA when libtorch sees a GPU, else the CPU.</summary>
public enum DeviceKind { Auto, Cpu, Cuda }

/// <summary>How a data row is laid out: chat messages, an alpaca-style instruction triple, raw text, or a preference
/// pair (a prompt with a chosen and a rejected answer, for <see cref="TrainingObjective.Dpo"/>).</summary>
public enum DataFormat { Chat, Instruction, Completion, Preference }

/// <summary>What training minimises: next-token cross-entropy on the answers (supervised fine-tuning), or DPO's
/// preference loss over chosen/rejected pairs (Rafailov et al. 2023).</summary>
public enum TrainingObjective { Sft, Dpo }

/// <summary>DPO's loss of a pair's margin, as TRL's loss_type: Sigmoid (the paper's -log σ(β·margin), with optional
/// label smoothing, cDPO), Hinge (SLiC: max(0, 1 - β·margin)) or Ipo (Azar et al. 2023: (margin - 1/(2β))² over
/// per-token mean log-probabilities).</summary>
public enum DpoLossKind { Sigmoid, Hinge, Ipo }

/// <summary>
/// The prompt template that turns chat/instruction rows into text; completion rows never use one. Auto is the
/// template the checkpoint ships (recognised by Training.Data.ChatTemplates), llama2-chat when it ships none.
/// </summary>
public enum TemplateKind { Auto, Llama2Chat, Llama3, Chatml, MistralInstruct, Gemma, Alpaca, None }

/// <summary>
/// What happens to a system message under a template without a system role (Gemma): Native refuses it (as the
/// template's own raise_exception does), Fold joins it to the first user message ("{system}\n\n{user}"). Under
/// other templates Fold also folds, Native keeps the template's system block.
/// </summary>
public enum SystemRole { Native, Fold }

/// <summary>Learning-rate schedule after the linear warmup.</summary>
public enum SchedulerKind { Cosine, Linear, Constant }
