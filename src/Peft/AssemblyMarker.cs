namespace QLoraNet.Peft;
