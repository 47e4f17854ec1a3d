namespace QLoraNet.Formats;
